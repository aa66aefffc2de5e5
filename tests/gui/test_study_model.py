"""The study model on its own: qtmodeltester, generations, lazy series, the proxy; display formatting."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QModelIndex

from pacspull.core.query import SeriesRow, StudyRow
from pacspull.gui import formatting as fmt
from pacspull.gui.models.study_model import COLUMNS, ROW_ROLE, SORT_ROLE, SeriesState, StudyModel, StudyProxyModel


def study(n: int, name: str = "Doe^Jane", series: int | None = 2) -> StudyRow:
    return StudyRow(patient_name=name, patient_id=f"P{n}", study_uid=f"1.2.{n}", study_date=f"2024010{n}",
                    study_time="101500", modalities=["CT"], series_count=series, instance_count=10 * n,
                    description=f"Study {n}")


def series(study_uid: str, number: int) -> SeriesRow:
    return SeriesRow(study_uid=study_uid, series_uid=f"{study_uid}.{number}", number=number, modality="CT",
                     description=f"Axial {number}", instance_count=5)


@pytest.fixture
def model() -> StudyModel:
    m = StudyModel()
    m.reset(1)
    m.add_studies(1, [study(1, "Müller^Jürgen"), study(2, "Yamada^Tarou=山田^太郎"), study(3, series=0)])
    return m


def test_model_passes_qtmodeltester(qtmodeltester, model):
    model.set_series(1, "1.2.1", [series("1.2.1", 2), series("1.2.1", 1)])
    qtmodeltester.check(model, force_py=True)
    qtmodeltester.check(model)


def test_proxy_passes_qtmodeltester_while_filtering(qtmodeltester, model):
    model.set_series(1, "1.2.2", [series("1.2.2", 1)])
    proxy = StudyProxyModel()
    proxy.setSourceModel(model)
    proxy.sort(0)
    proxy.setFilterFixedString("axial")
    qtmodeltester.check(proxy)
    assert proxy.rowCount() == 1  # the study whose series matches


def test_rows_of_another_generation_are_dropped(model):
    assert not model.add_studies(0, [study(9)])
    assert not model.set_series(0, "1.2.1", [series("1.2.1", 1)])
    assert model.study_count() == 3
    model.reset(2)
    assert model.study_count() == 0 and not model.add_studies(1, [study(1)])


def test_fetch_more_asks_for_series_once_and_they_arrive_sorted(qtbot, model):
    parent = model.index(0, 0)
    assert model.hasChildren(parent) and model.canFetchMore(parent)
    with qtbot.waitSignal(model.seriesRequested) as blocker:
        model.fetchMore(parent)
    assert blocker.args == ["1.2.1"]
    assert model.series_state("1.2.1") is SeriesState.LOADING and not model.canFetchMore(parent)
    model.set_series(1, "1.2.1", [series("1.2.1", 3), series("1.2.1", 1)])
    assert [model.index(r, 0, parent).data(ROW_ROLE).number for r in range(model.rowCount(parent))] == [1, 3]
    assert model.index(0, 0, parent).data() == "Series 1"
    assert model.parent(model.index(1, 4, parent)) == model.index(0, 0)


def test_a_failed_series_fetch_can_be_retried(model):
    parent = model.index(0, 0)
    model.fetchMore(parent)
    assert model.set_series_failed(1, "1.2.1", "connection refused")
    assert model.canFetchMore(parent)
    assert "connection refused" in model.data(parent, 3)  # ToolTipRole


def test_a_study_without_series_has_no_expander(model):
    assert not model.hasChildren(model.index(2, 0))
    assert not model.canFetchMore(model.index(2, 0))


def test_columns_are_declared_once_and_sort_keys_have_one_type(model):
    assert model.columnCount() == len(COLUMNS)
    for c in range(len(COLUMNS)):
        keys = {type(model.index(r, c).data(SORT_ROLE)) for r in range(model.rowCount())}
        assert len(keys) == 1, COLUMNS[c].header
    assert model.index(0, 0).data() == "Müller, Jürgen"
    assert model.index(0, 3).data() == "2024-01-01 10:15"
    assert model.index(0, 0, QModelIndex()).parent() == QModelIndex()


@pytest.mark.parametrize(("raw", "shown"), [
    ("Müller^Jürgen", "Müller, Jürgen"),
    ("Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada, Tarou (山田 太郎)"),
    ("=王^小东", "王 小东"),
    ("Doe^Jane^Q^Dr.^Jr", "Doe, Dr. Jane Q, Jr"),
    ("ANONYMOUS", "ANONYMOUS"),
    ("", ""),
])
def test_person_names_read_naturally(raw, shown):
    assert fmt.person_name(raw) == shown


def test_query_names_accept_family_comma_given():
    assert fmt.query_name(" Müller, J* ") == "Müller^J*"
    assert fmt.query_name("Doe^Jane") == "Doe^Jane"
    assert fmt.query_name("Doe,") == "Doe"


def test_dates_and_durations():
    assert fmt.date_time("20240115", "101500.123") == "2024-01-15 10:15"
    assert fmt.date("2024") == "2024"
    assert fmt.seconds(0.0004) == "0.4 ms" and fmt.seconds(0.25) == "250 ms" and fmt.seconds(2.34) == "2.3 s"
