; Inno Setup 6 script: the PacsPull installer for Windows (per-user, no administrator rights needed).
;
; build_scripts/build.py runs it after PyInstaller, passing what it reads from pyproject.toml:
;   ISCC.exe /DAppVersion=0.1.0 /DAppVersionNumeric=0.1.0.0 /DSourceDir=...\dist\PacsPull
;            /DOutputDir=...\dist /DIconFile=...\resources\pacspull.ico build_scripts\windows\pacspull.iss
; and leaves dist\PacsPull-<version>-windows-x64-setup.exe.
;
; Installs into %LOCALAPPDATA%\Programs\PacsPull with a Start-menu shortcut, an optional desktop
; shortcut, an optional PATH entry for the `pacspull` command (pacspull.com, the console program), and
; an uninstaller listed under Settings > Apps. IT departments can install for all users with
; `setup.exe /ALLUSERS` (elevated) and silently with `/VERYSILENT /SUPPRESSMSGBOXES`. Uninstalling
; keeps the user's nodes, settings, logs and retrieved studies.

#ifndef AppVersion
  #error AppVersion is not defined: run build_scripts/build.py, or pass /DAppVersion=X.Y.Z to ISCC
#endif
#ifndef AppVersionNumeric
  #define AppVersionNumeric AppVersion
#endif
#ifndef SourceDir
  #define SourceDir "..\..\dist\PacsPull"
#endif
#ifndef OutputDir
  #define OutputDir "..\..\dist"
#endif
#ifndef IconFile
  #define IconFile "..\..\resources\pacspull.ico"
#endif
#define AppName "PacsPull"
#define AppExe "PacsPull.exe"

[Setup]
; The AppId ties upgrades and the uninstaller together: never change it.
AppId={{6DF84523-D378-4BC1-8E3B-9CFD5A51A37C}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher={#AppName}
VersionInfoVersion={#AppVersionNumeric}
VersionInfoProductVersion={#AppVersionNumeric}
VersionInfoDescription={#AppName} installer
DefaultDirName={autopf}\{#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=commandline
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir={#OutputDir}
OutputBaseFilename={#AppName}-{#AppVersion}-windows-x64-setup
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName} {#AppVersion}
WizardStyle=modern
Compression=lzma2/max
SolidCompression=yes
; Closes a running PacsPull before files are replaced on upgrade.
CloseApplications=yes
; Announces the PATH change to Explorer so new terminals see it.
ChangesEnvironment=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"
Name: "german"; MessagesFile: "compiler:Languages\German.isl"
Name: "french"; MessagesFile: "compiler:Languages\French.isl"
Name: "japanese"; MessagesFile: "compiler:Languages\Japanese.isl"

[CustomMessages]
; No language prefix: the same text in every language (this file stays ASCII, which ISCC reads as is).
AddToPath=Add the pacspull command line to PATH

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "addtopath"; Description: "{cm:AddToPath}"; Flags: unchecked; Check: not IsAdminInstallMode

[Files]
; The whole onedir bundle: PacsPull.exe (window), pacspull.com (command line) and _internal\.
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; An upgrade replaces the bundle as a whole: files a newer version no longer ships must not linger.
Type: filesandordirs; Name: "{app}\_internal"

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "Search a PACS and retrieve DICOM studies"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
const
  UserEnvironmentKey = 'Environment';

{ True when Dir is one of the ';'-separated entries of Paths (Windows paths ignore case). }
function PathListContains(Paths, Dir: string): Boolean;
begin
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') > 0;
end;

procedure AddToUserPath(Dir: string);
var
  Paths: string;
begin
  if not RegQueryStringValue(HKCU, UserEnvironmentKey, 'Path', Paths) then
    Paths := '';
  if PathListContains(Paths, Dir) then
    exit;
  if (Paths <> '') and (Copy(Paths, Length(Paths), 1) <> ';') then
    Paths := Paths + ';';
  RegWriteExpandStringValue(HKCU, UserEnvironmentKey, 'Path', Paths + Dir);
end;

procedure RemoveFromUserPath(Dir: string);
var
  Paths: string;
  P: Integer;
begin
  if not RegQueryStringValue(HKCU, UserEnvironmentKey, 'Path', Paths) then
    exit;
  Paths := ';' + Paths + ';';
  P := Pos(';' + Uppercase(Dir) + ';', Uppercase(Paths));
  if P = 0 then
    exit;
  { Drop ';Dir', then the ';' added at each end. }
  Delete(Paths, P, Length(Dir) + 1);
  Paths := Copy(Paths, 2, Length(Paths) - 2);
  RegWriteExpandStringValue(HKCU, UserEnvironmentKey, 'Path', Paths);
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if (CurStep = ssPostInstall) and WizardIsTaskSelected('addtopath') then
    AddToUserPath(ExpandConstant('{app}'));
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RemoveFromUserPath(ExpandConstant('{app}'));
end;
