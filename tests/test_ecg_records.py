"""ECG reader: discovery, skipped files, windowed reads, lead selection, resampling, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from jepactl.domains.ecg.labels import csv_labels, dx_labels, ptbxl_labels, read_beats
from jepactl.domains.ecg.records import ECGDataConfig, ECGWindowReader, open_ecg, sliding_starts
from jepactl.domains.ecg.wfdb import open_records, read_window
from jepactl.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ecg"


def write_record(
    folder: Path,
    name: str,
    signal: np.ndarray,
    fs: float,
    leads: list[str],
    fmt: str = "16",
    comments: list[str] | None = None,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(leads),
        sig_name=leads,
        p_signal=signal,
        fmt=[fmt] * len(leads),
        comments=comments or [],
        write_dir=str(folder),
    )


def sine(fs: float, seconds: float, hz: float = 5.0, leads: int = 2) -> np.ndarray:
    t = np.arange(int(fs * seconds)) / fs
    return np.stack([np.sin(2 * np.pi * hz * t) * (k + 1) for k in range(leads)], axis=1)


def test_discovery_reads_good_records_and_skips_each_bad_file_with_its_reason(tmp_path):
    write_record(tmp_path / "a", "good16", sine(500, 4), 500, ["I", "II"], "16")
    write_record(tmp_path / "b", "good212", sine(360, 4), 360, ["MLII", "V1"], "212")
    write_record(tmp_path, "nodat", sine(500, 2), 500, ["I", "II"])
    (tmp_path / "nodat.dat").unlink()
    write_record(tmp_path, "short", sine(500, 2), 500, ["I", "II"])
    data = (tmp_path / "short.dat").read_bytes()
    (tmp_path / "short.dat").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbled.hea").write_text(
        "garbled 2 500 1000\ngarbled.dat 16 200 16 0 0 0 0 I\n!! x y\n"
    )
    np.save(tmp_path / "array.npy", sine(500, 3).T.astype(np.float32))

    source = open_records(tmp_path, 500.0, ["I", "II"])
    assert sorted(r.name for r in source.records) == ["a/good16", "array", "b/good212"]
    reasons = "\n".join(source.skipped)
    assert len(source.skipped) == 3
    assert "nodat.hea" in reasons and "'nodat.dat' is missing" in reasons
    assert "short.hea" in reasons and "truncated" in reasons
    assert "garbled.hea" in reasons and "bad header" in reasons
    array = next(r for r in source.records if r.kind == "npy")
    assert (array.fs, array.length, array.leads) == (500.0, 1500, ["I", "II"])


def test_nothing_readable_and_empty_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no ECG records under"):
        open_records(tmp_path, 500.0, [])
    write_record(tmp_path, "nodat", sine(500, 2), 500, ["I", "II"])
    (tmp_path / "nodat.dat").unlink()
    with pytest.raises(
        DataError, match=r"no readable ECG record .*1 skipped.*nodat.dat' is missing"
    ):
        open_records(tmp_path, 500.0, [])
    with pytest.raises(DataError, match="does not exist"):
        open_records(tmp_path / "nope", 500.0, [])


def test_windows_read_only_the_requested_samples_of_a_long_record(tmp_path):
    write_record(tmp_path, "long", sine(360, 600, hz=1.0), 360, ["MLII", "V1"], "212")
    record = open_records(tmp_path, 500.0, []).records[0]
    window = read_window(record, 360 * 300, 360 * 300 + 720)
    assert window.shape == (2, 720)
    t = (360 * 300 + np.arange(720)) / 360
    np.testing.assert_allclose(window[0], np.sin(2 * np.pi * t), atol=0.01)


def test_leads_are_picked_by_name_resampled_normalised_and_missing_leads_zero_filled(tmp_path):
    write_record(tmp_path, "r", sine(360, 10, hz=3.0), 360, ["MLII", "V5"], "16")
    cfg = ECGDataConfig(
        path=str(tmp_path), sample_rate=250, leads=("V1|V5", "I", "II"), crop_seconds=2.0
    )
    source = open_ecg(str(tmp_path), cfg)
    window, present = ECGWindowReader(source, cfg).read(0, 4.0, 500)
    assert window.shape == (3, 500) and present.tolist() == [True, False, True]
    assert np.all(window[1] == 0)
    t = 4.0 + np.arange(500) / 250
    expected = np.sin(2 * np.pi * 3.0 * t)
    expected = (expected - expected.mean()) / expected.std()
    # Window starts are placed to the nearest output sample: at most half a sample (2 ms) off.
    np.testing.assert_allclose(window[2], expected, atol=0.06)  # MLII read as II
    np.testing.assert_allclose(window[0], expected, atol=0.06)  # V5 as the V1|V5 lead
    np.testing.assert_allclose(window[2].std(), 1.0, atol=1e-4)


def test_nan_gaps_are_interpolated_and_windows_past_the_end_are_zero_padded(tmp_path):
    signal = np.tile(np.linspace(0, 1, 1000)[:, None], (1, 1)).astype(np.float32)
    signal[400:450] = np.nan
    np.save(tmp_path / "x.npy", signal.T)
    cfg = ECGDataConfig(sample_rate=500, leads=("II",), array_sample_rate=500.0, clip=100.0)
    reader = ECGWindowReader(open_ecg(str(tmp_path), cfg), cfg)
    window, _ = reader.read(0, 0.0, 1000)
    assert np.isfinite(window).all()
    assert np.allclose(np.diff(window[0]), np.diff(window[0])[0], atol=1e-4)  # still a line
    tail, _ = reader.read(0, 1.5, 500)
    assert np.all(tail[0, 250:] == 0) and np.any(tail[0, :250] != 0)


def test_a_lead_no_record_has_is_an_error_when_nothing_else_is_usable(tmp_path):
    write_record(tmp_path, "r", sine(500, 2), 500, ["I", "II"])
    with pytest.raises(DataError, match="no record under .* has any lead in data.leads"):
        open_ecg(str(tmp_path), ECGDataConfig(leads=("V7",)))


def test_sliding_starts_cover_the_record_and_its_tail():
    assert sliding_starts(10.0, 2.5, 1.25) == [0.0, 1.25, 2.5, 3.75, 5.0, 6.25, 7.5]
    assert sliding_starts(3.0, 2.5, 1.25) == [0.0, 0.5]
    assert sliding_starts(1.0, 2.5, 1.25) == [0.0]


def test_beat_annotations_map_to_aami_classes_and_drop_non_beats(tmp_path):
    write_record(tmp_path, "b", sine(360, 10), 360, ["MLII", "V1"], "212")
    symbols = ["+", "N", "L", "A", "V", "F", "/", "~", "j", "E", "S"]
    samples = np.arange(1, len(symbols) + 1) * 300
    wfdb.wrann("b", "atr", samples, symbols, fs=360, write_dir=str(tmp_path))
    beats = read_beats(open_records(tmp_path, 500.0, []), 0)
    assert [b.label for b in beats] == [0, 0, 1, 2, 3, 4, 0, 2, 1]  # N N S V F Q N V S
    assert [b.sample for b in beats][:2] == [600, 900]


def test_dx_codes_become_multi_hot_targets(tmp_path):
    write_record(tmp_path, "E1", sine(500, 2), 500, ["I", "II"], comments=["Age: 5", "Dx: 1,2"])
    write_record(tmp_path, "E2", sine(500, 2), 500, ["I", "II"], comments=["Dx: 2"])
    write_record(tmp_path, "E3", sine(500, 2), 500, ["I", "II"], comments=["Age: 1"])
    labels = dx_labels(open_records(tmp_path, 500.0, []))
    assert labels.classes == ["1", "2"] and labels.multilabel
    assert labels.targets.tolist() == [[1.0, 1.0], [0.0, 1.0]] and len(labels.records) == 2


def test_ptbxl_table_gives_statements_superclasses_and_folds(tmp_path):
    for name in ("00001_hr", "00002_hr"):
        write_record(tmp_path / "records500" / "00000", name, sine(500, 2), 500, ["I", "II"])
    (tmp_path / "ptbxl_database.csv").write_text(
        "ecg_id,scp_codes,strat_fold,filename_lr,filename_hr\n"
        "1,\"{'NORM': 100.0, 'SR': 0.0}\",3,records100/00000/00001_lr,records500/00000/00001_hr\n"
        "2,\"{'IMI': 50.0}\",10,records100/00000/00002_lr,records500/00000/00002_hr\n"
    )
    (tmp_path / "scp_statements.csv").write_text(
        ",description,diagnostic,diagnostic_class\nNORM,normal,1.0,NORM\nIMI,inferior MI,1.0,MI\n"
        "SR,sinus rhythm,,\n"
    )
    source = open_records(tmp_path, 500.0, [])
    every = ptbxl_labels(source, "all", 500)
    assert every.classes == ["IMI", "NORM", "SR"] and every.folds == [3, 10]
    assert every.targets.tolist() == [[0, 1, 1], [1, 0, 0]]
    sup = ptbxl_labels(source, "superdiagnostic", 500)
    assert sup.targets[:, :2].tolist() == [[1, 0], [0, 1]]  # NORM, MI


def test_plain_csv_labels_match_records_by_name(tmp_path):
    write_record(tmp_path, "p1", sine(500, 2, leads=1), 500, ["I"])
    write_record(tmp_path, "p2", sine(500, 2, leads=1), 500, ["I"])
    (tmp_path / "labels.csv").write_text("record,label\np2,AF\np1,normal\nmissing,AF\n")
    labels = csv_labels(open_records(tmp_path, 500.0, []), "labels.csv")
    assert labels.classes == ["AF", "normal"] and labels.targets.tolist() == [0, 1]


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared ECG data not present")
def test_cinc_mat_and_ptb_1khz_records_read_as_twelve_leads_at_500hz():
    cfg = ECGDataConfig()
    cinc = open_ecg(str(SHARED / "cinc2021_sample"), cfg)
    assert len(cinc.records) == 50 and not cinc.skipped
    window, present = ECGWindowReader(cinc, cfg).read(0, 0.0, 5000)
    assert window.shape == (12, 5000) and present.all() and np.abs(window).max() <= 5.0
    ptb = open_ecg(str(SHARED / "ptb_sample"), cfg)
    assert ptb.records[0].fs == 1000 and len(ptb.records[0].leads) == 15
    window, present = ECGWindowReader(ptb, cfg).read(0, 10.0, 5000)
    assert present.all() and (window.std(axis=1) > 0.5).all()


def test_direct_decoding_matches_wfdb_for_formats_16_212_and_24(tmp_path):
    from dataclasses import replace

    rng = np.random.default_rng(0)
    for fmt in ("16", "212", "24"):
        signal = rng.normal(size=(1000, 3))
        signal[5, 1] = np.nan  # stored as WFDB's invalid-sample value, read back as NaN
        write_record(tmp_path / fmt, "r", signal, 360, ["I", "II", "V1"], fmt)
        record = open_records(tmp_path / fmt, 500.0, []).records[0]
        assert record.layout is not None and record.layout.fmt == fmt
        for start, stop in ((0, 1000), (3, 10), (1, 2), (501, 1000)):
            fast = read_window(record, start, stop)
            slow = read_window(replace(record, layout=None), start, stop)
            np.testing.assert_array_equal(np.isnan(fast), np.isnan(slow))
            np.testing.assert_allclose(np.nan_to_num(fast), np.nan_to_num(slow), atol=1e-6)
        assert np.isnan(read_window(record, 5, 6)[1, 0])


def write_invalid_record(
    folder: Path, name: str, samples: int, fs: float, leads: list[str]
) -> None:
    """Write a format-16 record whose every sample is WFDB's "no sample" value (read as NaN)."""
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(leads),
        sig_name=leads,
        fmt=["16"] * len(leads),
        d_signal=np.full((samples, len(leads)), -32768, dtype=np.int16),
        adc_gain=[200.0] * len(leads),
        baseline=[0] * len(leads),
        write_dir=str(folder),
    )


def test_single_lead_records_under_any_name_are_read_as_the_first_recipe_lead(tmp_path, caplog):
    for name in ("a", "b", "c"):
        write_record(tmp_path, name, sine(250, 4, leads=1), 250, ["ECG"])
    write_record(tmp_path, "other", sine(250, 4), 250, ["X", "Y"])  # several leads, none wanted
    cfg = ECGDataConfig(crop_seconds=2.0)
    with caplog.at_level("WARNING", logger="jepactl"):
        source = open_ecg(str(tmp_path), cfg)
    assert [r.name for r in source.records] == ["a", "b", "c"]
    assert len(source.skipped) == 1 and "other" in source.skipped[0]
    assert "has none of the leads" in source.skipped[0]
    notices = [r.getMessage() for r in caplog.records if "single-lead" in r.getMessage()]
    assert notices == ["3 single-lead records (lead 'ECG') are used as lead I (data.leads[0])"]
    reader = ECGWindowReader(source, cfg)
    assert reader.maps[0] == [0] + [-1] * 11
    window, present = reader.read(0, 1.0, 1000)
    assert present.tolist() == [True] + [False] * 11
    assert window[0].std() > 0.5 and np.all(window[1:] == 0)


def test_unnamed_single_lead_wfdb_channel_and_one_row_arrays_are_the_first_lead(tmp_path, caplog):
    write_record(tmp_path, "named", sine(250, 4, leads=1), 250, ["ECG"])
    header = (tmp_path / "named.hea").read_text().splitlines()
    (tmp_path / "unnamed.hea").write_text(  # the signal line without its description field
        "unnamed" + header[0][len("named") :] + "\n" + " ".join(header[1].split()[:-1]) + "\n"
    )
    np.save(tmp_path / "flat.npy", sine(250, 4, leads=1)[:, 0].astype(np.float32))  # shape (n,)
    np.save(tmp_path / "row.npy", sine(250, 4, leads=1).T.astype(np.float32))  # shape (1, n)
    cfg = ECGDataConfig(leads=("II", "V1"), array_sample_rate=250.0, crop_seconds=2.0)
    with caplog.at_level("WARNING", logger="jepactl"):
        source = open_ecg(str(tmp_path), cfg)
    assert sorted(r.name for r in source.records) == ["flat", "named", "row", "unnamed"]
    unnamed = next(r for r in source.records if r.name == "unnamed")
    assert unnamed.leads == ["ch0"]
    reader = ECGWindowReader(source, cfg)
    assert reader.maps == [[0, -1]] * 4
    for i in range(4):
        window, present = reader.read(i, 0.5, 500)
        assert present.tolist() == [True, False] and window[0].std() > 0.5
    notices = [r.getMessage() for r in caplog.records if "single-lead" in r.getMessage()]
    # Arrays are positional (row 0 is data.leads[0] by definition): only the WFDB pair is noted.
    assert notices == [
        "2 single-lead records (leads 'ECG', 'ch0') are used as lead II (data.leads[0])"
    ]


def test_array_rows_are_the_recipe_leads_by_position_even_with_lead_alternatives(tmp_path):
    signal = sine(500, 4, hz=3.0, leads=2)
    np.save(tmp_path / "two.npy", signal.T.astype(np.float32))
    cfg = ECGDataConfig(leads=("II", "V1|V2|V4|V5"), crop_seconds=2.0)  # recipes/ecg/cpu.yaml
    source = open_ecg(str(tmp_path), cfg)
    reader = ECGWindowReader(source, cfg)
    assert reader.maps == [[0, 1]]
    window, present = reader.read(0, 1.0, 1000)
    assert present.tolist() == [True, True]
    assert window[1].std() > 0.5
    expected = (signal[500:1500, 1] - signal[500:1500, 1].mean()) / signal[500:1500, 1].std()
    np.testing.assert_allclose(window[1], expected, atol=1e-4)
    # data.array_leads names the rows: then leads are matched by name, in any order.
    named = ECGDataConfig(leads=("II", "V1|V2|V4|V5"), array_leads=("V2", "II"), crop_seconds=2.0)
    assert ECGWindowReader(open_ecg(str(tmp_path), named), named).maps == [[1, 0]]


def test_all_nan_records_are_skipped_with_their_reason_and_healthy_ones_kept(tmp_path):
    np.save(tmp_path / "healthy.npy", sine(500, 2).T.astype(np.float32))
    np.save(tmp_path / "blank.npy", np.full((2, 1000), np.nan, dtype=np.float32))
    np.savez(tmp_path / "blank_npz.npz", np.full(1000, np.nan))
    write_invalid_record(tmp_path, "blank_wfdb", 500, 250, ["I", "II"])
    write_invalid_record(tmp_path, "blank_holter", 250 * 120, 250, ["I"])  # > 1 min: chunks
    source = open_ecg(str(tmp_path), ECGDataConfig(leads=("I", "II")))
    assert [r.name for r in source.records] == ["healthy"]
    assert len(source.skipped) == 4
    assert all("all samples are NaN" in reason for reason in source.skipped)
    assert {Path(reason.split(": ")[0]).name for reason in source.skipped} == {
        "blank.npy",
        "blank_npz.npz",
        "blank_wfdb.hea",
        "blank_holter.hea",
    }
    (tmp_path / "healthy.npy").unlink()
    with pytest.raises(DataError, match="no readable ECG record .*4 skipped.*all samples are NaN"):
        open_ecg(str(tmp_path), ECGDataConfig(leads=("I", "II")))


def test_records_with_some_nan_are_kept_and_their_gaps_filled(tmp_path):
    partial = sine(500, 2).T.astype(np.float32)
    partial[0] = np.nan  # one whole lead, and part of the other
    partial[1, :300] = np.nan
    np.save(tmp_path / "partial.npy", partial)
    holter = np.sin(np.arange(250 * 120) / 20.0)[:, None]
    holter[: 250 * 30] = np.nan  # the first half minute missing: the later chunks have signal
    write_record(tmp_path, "holter", holter, 250, ["II"])
    cfg = ECGDataConfig(leads=("I", "II"), sample_rate=250, array_sample_rate=250.0)
    source = open_ecg(str(tmp_path), cfg)
    assert sorted(r.name for r in source.records) == ["holter", "partial"] and not source.skipped
    reader = ECGWindowReader(source, cfg)
    for record_index, start in ((0, 40.0), (1, 0.0)):  # holter (past its gap), partial
        window, present = reader.read(record_index, start, 500)
        assert np.isfinite(window).all() and window[1].std() > 0.5
    assert present.tolist() == [True, True] and np.all(window[0] == 0)  # the all-NaN lead
