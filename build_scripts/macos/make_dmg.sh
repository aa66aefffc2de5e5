#!/usr/bin/env bash
# Make the macOS disk image from dist/PacsPull.app: a window with the app and a link to /Applications.
#
#   build_scripts/macos/make_dmg.sh APP VERSION OUT_DIR
#     -> OUT_DIR/PacsPull-VERSION-macos-ARCH.dmg
#
# build_scripts/build.py calls it after PyInstaller. Signing and notarization are optional and driven by
# environment variables; each step is skipped, with a line saying so, when its variables are absent:
#   PACSPULL_CODESIGN_IDENTITY     "Developer ID Application: Name (TEAMID)" from the keychain. The spec
#                                  already signed the app with it (hardened runtime); here: verify the
#                                  app, sign the dmg.
#   PACSPULL_NOTARY_PROFILE        a `xcrun notarytool store-credentials` profile name, or else all of
#   PACSPULL_NOTARY_APPLE_ID       the Apple ID,
#   PACSPULL_NOTARY_TEAM_ID        the team ID and
#   PACSPULL_NOTARY_PASSWORD       an app-specific password for it.
#                                  With either set (and a signing identity), the dmg is submitted to
#                                  Apple's notary service, waited for, and the ticket stapled to it.
# hdiutil fails now and then on hosted CI runners ("Resource busy"): every hdiutil call is retried.
set -euo pipefail

APP=${1:?usage: make_dmg.sh APP VERSION OUT_DIR}
VERSION=${2:?usage: make_dmg.sh APP VERSION OUT_DIR}
OUT_DIR=${3:?usage: make_dmg.sh APP VERSION OUT_DIR}
NAME=PacsPull
DMG="$OUT_DIR/$NAME-$VERSION-macos-$(uname -m).dmg"
say() { printf '[make_dmg] %s\n' "$*" >&2; }

[ -d "$APP/Contents/MacOS" ] || { say "no app bundle at $APP"; exit 2; }

# retry N CMD...: run CMD up to N times, waiting a little longer after each failure.
retry() {
    local tries=$1 n=1; shift
    until "$@"; do
        if [ "$n" -ge "$tries" ]; then say "giving up after $n attempts: $*"; return 1; fi
        say "attempt $n failed, retrying in $((n * 5)) s: $*"
        sleep $((n * 5)); n=$((n + 1))
    done
}

IDENTITY=${PACSPULL_CODESIGN_IDENTITY:-}
if [ -n "$IDENTITY" ]; then
    say "verifying the signature of $APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
else
    say "PACSPULL_CODESIGN_IDENTITY not set: the app stays ad-hoc signed (Gatekeeper will warn on other Macs)"
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
# ditto keeps the bundle's symlinks, extended attributes and signatures intact.
ditto "$APP" "$STAGE/$NAME.app"
ln -s /Applications "$STAGE/Applications"

mkdir -p "$OUT_DIR"
rm -f "$DMG"
say "creating $DMG"
retry 5 hdiutil create -volname "$NAME $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
retry 3 hdiutil verify "$DMG"

if [ -n "$IDENTITY" ]; then
    say "signing the disk image"
    codesign --force --timestamp --sign "$IDENTITY" "$DMG"
fi

notary_auth=()
if [ -n "${PACSPULL_NOTARY_PROFILE:-}" ]; then
    notary_auth=(--keychain-profile "$PACSPULL_NOTARY_PROFILE")
elif [ -n "${PACSPULL_NOTARY_APPLE_ID:-}" ] && [ -n "${PACSPULL_NOTARY_TEAM_ID:-}" ] \
        && [ -n "${PACSPULL_NOTARY_PASSWORD:-}" ]; then
    notary_auth=(--apple-id "$PACSPULL_NOTARY_APPLE_ID" --team-id "$PACSPULL_NOTARY_TEAM_ID"
                 --password "$PACSPULL_NOTARY_PASSWORD")
fi
if [ ${#notary_auth[@]} -gt 0 ] && [ -n "$IDENTITY" ]; then
    say "notarizing (this waits for Apple's answer, usually a few minutes)"
    result=$(xcrun notarytool submit "$DMG" "${notary_auth[@]}" --wait --timeout 30m --output-format json)
    field() { printf '%s' "$result" | python3 -c "import json, sys; print(json.load(sys.stdin).get('$1', ''))"; }
    # notarytool exits 0 for a rejected submission too: the status says what happened.
    if [ "$(field status)" != Accepted ]; then
        say "notarization failed ($(field status)); Apple's log follows"
        xcrun notarytool log "$(field id)" "${notary_auth[@]}" >&2 || true
        exit 1
    fi
    retry 3 xcrun stapler staple "$DMG"
    xcrun stapler validate "$DMG"
elif [ ${#notary_auth[@]} -gt 0 ]; then
    say "notary credentials given but no PACSPULL_CODESIGN_IDENTITY: Apple notarizes only signed apps; skipped"
else
    say "no notary credentials (PACSPULL_NOTARY_PROFILE or _APPLE_ID/_TEAM_ID/_PASSWORD): not notarized"
fi

say "done: $DMG ($(du -h "$DMG" | cut -f1))"
printf '%s\n' "$DMG"
