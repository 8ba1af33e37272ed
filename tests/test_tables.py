"""halp tables: cells against the published numbers, targets, CSV, LaTeX, bad input."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from halp.errors import TablesError
from halp.report import published as pub
from halp.report.naming import lambda_variant, prototypes_variant
from halp.report.results import read_result
from halp.report.tables import CSV_COLUMNS, build_tables, compare, latex_escape

EXTS = ("md", "tex", "csv")
STEMS = (
    "table1_linear",
    "table2_knn",
    "table3_transfer",
    "table4_overhead",
    "table5_lambda",
    "table6_prototypes",
    "table_ablations",
    "table_semi",
    "table_aimclr",
    "table_hiclr",
    "table_hiclr_arrangement",
    "table_graphcl",
)


def write_result(results: Path, name: str, top1: float, **metrics: float) -> Path:
    """A results JSON in the format ``halp evaluate`` writes, fields taken from its name."""
    m = re.match(r"^(ntu60|ntu120|pku2)_(xsub|xview|xset)_(.+)_(linear|knn|semi\d+|finetune)", name)
    if m:
        dataset, benchmark, variant, protocol = m.groups()
        pretrained_on = dataset
    else:
        t = re.match(r"^(\w+?)_to_(\w+?)_(.+)_transfer", name)
        assert t, name
        pretrained_on, dataset, variant = t.groups()
        benchmark, protocol = "xsub", "transfer"
    fraction = int(protocol[4:]) / 100 if protocol.startswith("semi") else 1.0
    data = {
        "protocol": "semi" if protocol.startswith("semi") else protocol,
        "dataset": dataset,
        "benchmark": benchmark,
        "method": variant.split("-")[0],
        "modality": "joint",
        "pretrained_on": pretrained_on,
        "encoder_init": "pretrained",
        "metrics": {"top1": top1, **metrics},
        "config": {"protocol": protocol, "label_fraction": fraction},
        "checkpoint": {"path": "runs/x/checkpoint.pt", "sha256": "0" * 64, "epoch": 451},
        "provenance": {"commit": "abc123", "modified": False},
        "seconds": 1.0,
    }
    path = results / f"{name}.json"
    path.write_text(json.dumps(data, indent=1))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    res = tmp_path / "results"
    res.mkdir()
    write_result(res, "ntu60_xsub_halp_linear", 79.94, best_on_test=80.3, top1_std=0.0)
    write_result(res, "ntu60_xview_baseline_linear", 84.96, best_on_test=85.2)
    write_result(res, "ntu120_xset_halp_cmd_linear", 73.15)  # half up: 73.2 (+0.1)
    write_result(res, "ntu60_xsub_cmd_knn", 70.6)
    write_result(res, "ntu60_to_pku2_halp_transfer", 54.0, best_on_test=55.0)
    write_result(res, "ntu60_xsub_halp-lam0.6_linear", 79.61)
    write_result(res, "ntu60_xsub_halp-lam1_linear", 79.0)
    write_result(res, "ntu60_xsub_halp-N10_linear", 80.0)
    write_result(res, "ntu60_xsub_halp-qkslerp_linear", 77.5)
    write_result(res, "ntu60_xsub_halp-refgru_linear", 79.55)
    write_result(res, "ntu60_xsub_halp_semi10", 52.34, top1_std=0.42, best_on_test=53.0)
    write_result(res, "ntu60_xsub_halp_finetune", 85.0, top1_std=0.0)
    write_result(res, "pku2_xview_halp_semi1", 20.0, top1_std=1.0)  # a benchmark off the grid
    write_result(res, "ntu60_xsub_halp-lam0.6_knn", 60.0)  # in no table
    (res / "overhead.json").write_text(
        json.dumps(
            {
                "time": {"baseline": 10.0, "halp": 11.5, "cmd": 30.0, "halp_cmd": 33.0},
                "memory": {"baseline": 2.0e9, "halp": 2.0e9, "cmd": 3.9e9},
                "device": "test device",
            }
        )
    )
    (res / "notes.json").write_text("{}")  # not a results name: ignored
    return res


def md_cells(path: Path) -> dict[tuple[str, str], str]:
    """``{(row label, column): cell text}`` of a Markdown table."""
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split(" | ")]
    cells = {}
    for line in lines[2:]:
        values = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(values) == len(header), line
        for column, value in zip(header[1:], values[1:], strict=True):
            cells[values[0], column] = value
    return cells


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_writes_every_table_in_three_formats_and_an_index(results: Path, tmp_path: Path):
    out = tmp_path / "tables"
    written = build_tables(results, out)
    expected = [out / f"{stem}.{ext}" for stem in STEMS for ext in EXTS] + [out / "tables.md"]
    assert written == expected
    assert all(p.stat().st_size > 0 for p in written)
    index = (out / "tables.md").read_text()
    for stem in STEMS:
        assert f"({stem}.md)" in index and f"({stem}.tex)" in index and f"({stem}.csv)" in index
    assert "`ntu60_xsub_halp-lam0.6_knn.json`: knn top-1 60.00" in index  # in no table
    assert "`notes.json`" in index  # ignored, listed
    assert not list(out.glob("*.partial"))


def test_cells_show_reproduced_published_and_difference(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    t1 = md_cells(tmp_path / "table1_linear.md")
    assert t1["HaLP", "NTU-60 x-sub"] == "79.9 / 79.7 (+0.2)"
    assert t1["Baseline", "NTU-60 x-view"] == "85.0 / 85.5 (-0.5)"
    assert t1["HaLP+CMD", "NTU-120 x-set"] == "73.2 / 73.1 (+0.1)"
    assert md_cells(tmp_path / "table2_knn.md")["CMD", "NTU-60 x-sub"] == "70.6 / 70.6 (+0.0)"
    t3 = md_cells(tmp_path / "table3_transfer.md")
    assert t3["HaLP", "NTU-60 → PKU-II"] == "54.0 / 54.8 (-0.8)"
    t5 = md_cells(tmp_path / "table5_lambda.md")
    assert t5["λ = 0.8 (default)", "NTU-60 x-sub"] == "79.9 / 79.7 (+0.2)"  # plain halp
    assert t5["λ = 0.6", "NTU-60 x-sub"] == "79.6 / 79.6 (+0.0)"
    assert t5["λ = 1", "NTU-60 x-sub"] == "79.0 / 79.7 (-0.7)"
    assert md_cells(tmp_path / "table6_prototypes.md")["N = 10", "NTU-60 x-sub"] == (
        "80.0 / 79.5 (+0.5)"
    )
    ab = md_cells(tmp_path / "table_ablations.md")
    # 77.92 is published with two decimals: the cell follows its precision
    assert ab["HaLP, slerp from k towards q (halp-qkslerp)", "NTU-60 x-sub"] == (
        "77.50 / 77.92 (-0.42)"
    )
    assert ab["HaLP, reference-code GRU (halp-refgru)", "NTU-60 x-sub"] == (
        "79.6 / n/a (not in paper)"
    )


def test_missing_cells_name_their_target(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    t1 = md_cells(tmp_path / "table1_linear.md")
    assert t1["HaLP", "NTU-60 x-view"] == f"– / 86.8 ({results}/ntu60_xview_halp_linear.json)"
    assert t1["Baseline", "PKU-II x-sub"] == (
        f"– / 42.9 ({results}/pku2_xsub_baseline_linear.json)"
    )
    t3 = md_cells(tmp_path / "table3_transfer.md")
    assert t3["CMD", "NTU-120 → PKU-II"].endswith(f"({results}/ntu120_to_pku2_cmd_transfer.json)")
    ab = md_cells(tmp_path / "table_ablations.md")
    assert ab["HaLP, anchor = query (halp-anchorq)", "NTU-60 x-sub"] == (
        f"– / 77.9 ({results}/ntu60_xsub_halp-anchorq_linear.json)"
    )
    semi = md_cells(tmp_path / "table_semi.md")
    assert semi["CMD, NTU-60 x-view", "1 %"] == f"– ({results}/ntu60_xview_cmd_semi1.json)"


def test_targets_follow_the_workflow_naming():
    assert [lambda_variant(lam) for lam in pub.LAMBDA] == [
        "halp-lam1",
        "halp",
        "halp-lam0.6",
        "halp-lam0.4",
        "halp-lam0.2",
    ]
    assert [prototypes_variant(n) for n in pub.PROTOTYPES] == [
        "halp-N10",
        "halp",
        "halp-N40",
        "halp-N60",
    ]


def test_literature_rows_are_marked_as_cited(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    t1 = md_cells(tmp_path / "table1_linear.md")
    assert t1["AimCLR [cited: HaLP poster]", "NTU-60 x-sub"] == "74.3 (cited)"
    assert t1["AimCLR+HaLP [cited: HaLP poster]", "NTU-60 x-sub"] == "75.2 (cited)"
    assert t1["AimCLR [cited: HaLP poster]", "NTU-60 x-view"] == "–"
    rows = csv_rows(tmp_path / "table1_linear.csv")
    cited = [r for r in rows if r["row"].startswith("AimCLR") and r["published"]]
    assert [(r["published"], r["reproduced"], r["target"]) for r in cited] == [
        ("74.3", "", "cited: HaLP poster"),
        ("75.2", "", "cited: HaLP poster"),
    ]
    assert "does not train them" in (tmp_path / "table1_linear.md").read_text()
    # the kNN table has no PKU-II column (the paper reports none) and no cited rows
    assert "PKU-II" not in (tmp_path / "table2_knn.md").read_text().splitlines()[2]


def test_csv_has_one_row_per_cell(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    rows = csv_rows(tmp_path / "table1_linear.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == (len(pub.METHODS) + len(pub.LINEAR_CITED)) * 5
    assert {r["table"] for r in rows} == {"table1_linear"}
    halp = next(r for r in rows if r["row"] == "HaLP" and r["column"] == "NTU-60 x-sub")
    assert halp == {
        "table": "table1_linear",
        "row": "HaLP",
        "column": "NTU-60 x-sub",
        "reproduced": "79.9400",
        "published": "79.7",
        "difference": "0.2400",
        "target": f"{results}/ntu60_xsub_halp_linear.json",
        "std": "",
        "best_on_test": "80.3000",
    }
    missing = next(r for r in rows if r["row"] == "CMD" and r["column"] == "NTU-60 x-sub")
    assert (missing["reproduced"], missing["difference"], missing["published"]) == ("", "", "79.8")
    semi = csv_rows(tmp_path / "table_semi.csv")
    cell = next(r for r in semi if r["row"] == "HaLP, NTU-60 x-sub" and r["column"] == "10 %")
    assert (cell["reproduced"], cell["std"], cell["published"]) == ("52.3400", "0.4200", "")
    for stem in STEMS:  # every cell of every table is a CSV row
        body = [ln for ln in (tmp_path / f"{stem}.md").read_text().splitlines() if ln[:1] == "|"]
        n_columns = body[0].count(" | ")
        assert len(csv_rows(tmp_path / f"{stem}.csv")) == (len(body) - 2) * n_columns


def test_overhead_ratios(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    t4 = md_cells(tmp_path / "table4_overhead.md")
    assert t4["Baseline", "Time / epoch"] == "1.00× / 1× (+0.00)"
    assert t4["HaLP", "Time / epoch"] == "1.15× / 1.13× (+0.02)"
    assert t4["HaLP+CMD", "Time / epoch"] == "3.30× / 3.32× (-0.02)"
    assert t4["CMD", "Memory"] == "1.95× / 1.94× (+0.01)"
    assert t4["HaLP+CMD", "Memory"] == f"– / 1.94× ({results}/overhead.json)"
    assert "test device" in (tmp_path / "table4_overhead.md").read_text()


def test_overhead_absent(tmp_path: Path):
    build_tables(tmp_path / "no-results", tmp_path / "out")
    t4 = md_cells(tmp_path / "out" / "table4_overhead.md")
    assert t4["HaLP", "Time / epoch"] == f"– / 1.13× ({tmp_path}/no-results/overhead.json)"


def test_semi_table_shows_reproduced_only(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    semi = md_cells(tmp_path / "table_semi.md")
    assert semi["HaLP, NTU-60 x-sub", "10 %"] == "52.3 ± 0.4 / n/a (supplement)"
    assert semi["HaLP, NTU-60 x-sub", "100 % (fine-tune)"] == "85.0 ± 0.0 / –"
    assert semi["HaLP, PKU-II x-view", "1 %"] == "20.0 ± 1.0 / n/a (supplement)"
    text = (tmp_path / "table_semi.md").read_text()
    assert "supplement" in text and "reproduced values only" in text


def test_latex_is_structurally_sound(results: Path, tmp_path: Path):
    build_tables(results, tmp_path)
    for stem in STEMS:
        tex = (tmp_path / f"{stem}.tex").read_text()
        body = [ln for ln in tex.splitlines() if not ln.startswith("%")]
        assert body[0].startswith(r"\begin{tabular}{l") and body[-1] == r"\end{tabular}"
        assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
        assert body[1] == r"\toprule" and body[-2] == r"\bottomrule"
        n_columns = len(re.match(r"\\begin\{tabular\}\{(\w+)\}", body[0])[1])
        rows = [ln for ln in body if ln.endswith(r" \\")]
        assert len(rows) >= 2
        for line in rows:  # every row has exactly n_columns cells
            assert len(re.findall(r"(?<!\\)&", line)) == n_columns - 1, line
        for line in body:
            assert not re.search(r"(?<!\\)[_%#]", line), line  # specials escaped
            assert line.isascii(), line
            depth = 0
            for ch in re.sub(r"\\[{}]", "", line):  # braces balanced (escaped ones aside)
                depth += {"{": 1, "}": -1}.get(ch, 0)
                assert depth >= 0, line
            assert depth == 0, line
            assert line.count("$") % 2 == 0, line
    tex = (tmp_path / "table1_linear.tex").read_text()
    assert r"results/ntu60\_xview\_halp\_linear.json" in tex
    assert r"\midrule" + "\nAimCLR" in tex  # literature rows set apart


def test_latex_escape():
    assert latex_escape("a_b & 5% #1 $x ±0.4 – λ") == (r"a\_b \& 5\% \#1 \$x $\pm$0.4 -- $\lambda$")


def test_compare_arithmetic():
    assert compare(79.75, "79.7", "t").text == "79.8 / 79.7 (+0.1)"  # half up
    assert compare(79.649, "79.7", "t").text == "79.6 / 79.7 (-0.1)"
    assert compare(79.7, "79.7", "t").text == "79.7 / 79.7 (+0.0)"
    cell = compare(70.0, "78.0", "t")
    assert cell.text == "70.0 / 78.0 (-8.0)" and cell.difference == pytest.approx(-8.0)
    assert compare(None, "78.0", "results/x.json").text == "– / 78.0 (results/x.json)"
    assert compare(None, None, "results/x.json").text == "– (results/x.json)"


def test_output_is_deterministic(results: Path, tmp_path: Path):
    first = {p.name: p.read_bytes() for p in build_tables(results, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in build_tables(results, tmp_path / "b")}
    assert first == second


def test_malformed_json_names_the_file(results: Path, tmp_path: Path):
    bad = results / "ntu60_xsub_cmd_linear.json"
    bad.write_text('{"metrics": {"top1": 7')
    with pytest.raises(TablesError, match=re.escape(str(bad)) + ".*not valid JSON"):
        build_tables(results, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content", [{"protocol": "linear"}, {"metrics": {"top1": "79.9"}}, {"metrics": {}}, [1, 2]]
)
def test_missing_top1_names_the_file(tmp_path: Path, content):
    path = tmp_path / "ntu60_xsub_halp_linear.json"
    path.write_text(json.dumps(content))
    with pytest.raises(TablesError, match=re.escape(str(path)) + ".*metrics.top1"):
        read_result(path)


def test_result_contradicting_its_name_is_an_error(tmp_path: Path):
    path = write_result(tmp_path, "ntu60_xsub_halp_knn", 70.0)
    data = json.loads(path.read_text())
    (tmp_path / "ntu60_xsub_halp_linear.json").write_text(json.dumps(data))
    with pytest.raises(
        TablesError, match=re.escape("ntu60_xsub_halp_linear.json: protocol is 'knn'")
    ):
        read_result(tmp_path / "ntu60_xsub_halp_linear.json")
    semi = write_result(tmp_path, "ntu60_xsub_halp_semi1", 30.0)
    data = json.loads(semi.read_text())
    (tmp_path / "ntu60_xsub_halp_semi5.json").write_text(json.dumps(data))
    with pytest.raises(
        TablesError, match=re.escape("label_fraction is 0.01 but the file name says 5")
    ):
        read_result(tmp_path / "ntu60_xsub_halp_semi5.json")
    transfer = write_result(tmp_path, "ntu60_to_pku2_cmd_transfer", 50.0)
    data = json.loads(transfer.read_text())
    (tmp_path / "ntu120_to_pku2_cmd_transfer.json").write_text(json.dumps(data))
    with pytest.raises(TablesError, match="pretrained_on is 'ntu60'"):
        read_result(tmp_path / "ntu120_to_pku2_cmd_transfer.json")


def test_malformed_overhead_names_the_file(tmp_path: Path):
    (tmp_path / "overhead.json").write_text(json.dumps({"time": {"baseline": "fast"}}))
    with pytest.raises(TablesError, match=re.escape("overhead.json: 'time'")):
        build_tables(tmp_path, tmp_path / "out")


def test_published_numbers_match_reference():
    """Spot checks against the paper's tables (Sec. 4.3-4.4), one per table."""
    assert pub.LINEAR["halp_cmd"][("pku2", "xsub")] == "47.5"
    assert pub.LINEAR["baseline"][("ntu120", "xset")] == "69.8"
    assert pub.KNN["halp"][("ntu120", "xsub")] == "55.8"
    assert ("pku2", "xsub") not in pub.KNN["cmd"]
    assert pub.TRANSFER["halp_cmd"] == {"ntu60": "56.6", "ntu120": "57.3"}
    assert pub.OVERHEAD["time"]["halp_cmd"] == "3.32" and pub.OVERHEAD["memory"]["cmd"] == "1.94"
    assert list(pub.LAMBDA.values()) == ["79.7", "79.7", "79.6", "79.6", "79.5"]
    assert list(pub.PROTOTYPES.values()) == ["79.5", "79.7", "79.5", "79.5"]
    assert {a.variant: a.published for a in pub.ABLATIONS if a.published} == {
        "baseline": "78.0",
        "halp": "79.7",
        "halp-tcfixed": "79.4",
        "halp-anchorq": "77.9",
        "halp-qkslerp": "77.92",
    }


def test_linear_table_says_which_learning_rate_each_method_used(tmp_path: Path) -> None:
    res = tmp_path / "results"
    res.mkdir()
    write_result(res, "ntu60_xsub_halp_linear", 79.9, lr=0.005)
    write_result(res, "pku2_xsub_halp_linear", 43.0, lr=0.001)
    write_result(res, "ntu60_xsub_cmd_linear", 79.0, lr=0.1)
    build_tables(res, tmp_path / "tables")
    text = (tmp_path / "tables" / "table1_linear.md").read_text()
    assert "Rates of the reproduced cells: HaLP 0.001, 0.005; CMD 0.1." in text
    assert "0.1 for CMD (CMD's protocol)" in text
    knn = (tmp_path / "tables" / "table2_knn.md").read_text()
    assert "Rates of the reproduced cells" not in knn
