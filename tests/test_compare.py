"""Policy comparison: known outcomes rank correctly; intervals and tests are right."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from sim.api import compare, policy_dict, split_policies, summarize_runs
from sim.cli.main import main
from sim.common.errors import ConfigError
from sim.metrics.registry import flatten
from sim.metrics.stats import mean_ci, paired_test, step_means
from tests.helpers import chain_hashes, cluster, llm, workload

T_975_DF2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)


def _one_growing_session():
    """One session of four sequential calls whose prompts grow by 320 tokens (20 blocks)
    and share their prefix.  On two replicas, sticky routing hits the previous prompt
    each time (0 + 320 + 640 + 960 of 3200 tokens = 60%); round robin alternates and
    hits only the call before last (0 + 0 + 320 + 640 of 3200 = 30%)."""
    calls = []
    for k in range(1, 5):
        parents = (f"c{k - 1}",) if k > 1 else ()
        calls.append(
            llm(f"c{k}", "s", 320 * k, 4, parents=parents, gap=1.0, hashes=chain_hashes(0, 320 * k))
        )
    return workload(calls)


def test_compare_ranks_sticky_routing_above_round_robin_on_a_growing_session() -> None:
    cmp = compare(
        _one_growing_session(),
        cluster(replicas=2),
        ["round_robin", "session_affinity"],
        seeds=2,
        rank_by="ttft_s.mean",
    )
    t = cmp.table.set_index("policy")
    assert list(cmp.table["policy"]) == ["round_robin", "session_affinity"]
    assert t.loc["round_robin", "prefix_hit_rate"] == pytest.approx(0.3)
    assert t.loc["session_affinity", "prefix_hit_rate"] == pytest.approx(0.6)
    assert t.loc["session_affinity", "rank"] == 1 and t.loc["round_robin", "rank"] == 2
    assert t.loc["session_affinity", "ttft_s.mean"] < t.loc["round_robin", "ttft_s.mean"]
    # deterministic policies: every seed gives the same numbers, so zero-width intervals
    # and an exactly constant paired difference (p = 0)
    assert t.loc["round_robin", "prefix_hit_rate.ci95"] == 0.0
    assert t.loc["session_affinity", "prefix_hit_rate.p_value"] == 0.0
    assert bool(t.loc["session_affinity", "prefix_hit_rate.significant"])
    assert "prefix_hit_rate.p_value" not in cmp.runs.columns
    assert len(cmp.runs) == 4 and sorted(cmp.runs["seed"].unique()) == [0, 1]
    md = cmp.markdown()
    assert md.splitlines()[0].startswith("| policy | rank |")
    assert "| session_affinity | 1 |" in md and "60.0% ± 0 *" in md


def test_higher_is_better_metrics_rank_descending() -> None:
    runs = pd.DataFrame(
        {"policy": ["a", "b", "a", "b"], "seed": [0, 0, 1, 1],
         "prefix_hit_rate": [0.2, 0.5, 0.4, 0.7], "ttft_s.p50": [1.0, 3.0, 1.0, 3.0]}
    )  # fmt: skip
    by_hit = summarize_runs(runs, ["a", "b"], "prefix_hit_rate").set_index("policy")
    assert (by_hit.loc["b", "rank"], by_hit.loc["a", "rank"]) == (1, 2)
    by_ttft = summarize_runs(runs, ["a", "b"], "ttft_s.p50").set_index("policy")
    assert (by_ttft.loc["a", "rank"], by_ttft.loc["b", "rank"]) == (1, 2)
    assert by_hit.loc["b", "prefix_hit_rate"] == pytest.approx(0.6)
    # b - a = 0.3 on both seeds: constant difference
    assert by_hit.loc["b", "prefix_hit_rate.p_value"] == 0.0
    with pytest.raises(ConfigError, match="not a metric"):
        summarize_runs(runs, ["a", "b"], "nope")


def test_mean_ci_and_paired_test_match_hand_computation() -> None:
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == 2.0
    assert ci.half_width == pytest.approx(T_975_DF2 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0]).half_width)
    # differences 1, 2, 3: mean 2, sd 1, t = 2 sqrt(3) = 3.4641 on 2 df -> p = 0.07418
    test = paired_test([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])
    assert test.diff == 2.0
    assert test.p_value == pytest.approx(0.0741799, rel=1e-5)
    assert not test.significant(0.05)
    assert paired_test([1.0, 2.0], [1.0, 2.0]).p_value == 1.0


def test_step_means_are_time_weighted() -> None:
    # 4 from t=1 to t=3, then 0: bins [0,2) -> (0 x 1 + 4 x 1) / 2 = 2; [2,4) -> 4 x 1 / 2 = 2
    out = step_means([1.0, 3.0], [4.0, 0.0], [0.0, 2.0, 4.0])
    assert list(out) == [2.0, 2.0]


def test_policy_lists_split_on_commas_but_keep_parameters() -> None:
    assert split_policies("round_robin,prefix_affinity:cache_threshold=0.5,load_weight=2,least_loaded") == [
        "round_robin", "prefix_affinity:cache_threshold=0.5,load_weight=2", "least_loaded",
    ]  # fmt: skip
    assert split_policies("a:x=1,batching=fcfs") == ["a:x=1", "batching=fcfs"]
    assert policy_dict("least_loaded+batching=fcfs") == {
        "router": "least_loaded",
        "batching": "fcfs",
    }
    assert policy_dict({"routing": "x"}) == {"router": "x"}
    assert flatten({"ttft_s": {"p50": 1.0}, "seed": 0}) == {"ttft_s.p50": 1.0, "seed": 0}


def test_compare_cli_writes_table_files(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    rc = main(["compare", "--quiet", "--policies", "round_robin,session_affinity", "--seeds", "2",
               "--out", str(out)])  # fmt: skip
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "comparison.html")
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["policy"]) == ["round_robin", "session_affinity"]
    for col in ("seeds", "rank", "ttft_s.p50", "ttft_s.p50.ci95", "slo_attainment", "cost_usd"):
        assert col in table.columns, col
    assert sorted(table["rank"]) == [1, 2]
    runs = pd.read_csv(out / "comparison_runs.csv")
    assert len(runs) == 4
    html = (out / "comparison.html").read_text()
    assert "<th>policy</th>" in html and "data:image/png;base64," in html
    assert (out / "runs" / "session_affinity-seed1" / "summary.json").exists()
    assert "| policy |" in (out / "comparison.md").read_text()


def test_unknown_policy_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    rc = main(
        ["compare", "--quiet", "--policies", "round_robin,no_such_router", "--out", str(tmp_path)]
    )
    assert rc == 2
    assert "no_such_router" in capsys.readouterr().err


def test_runner_tidy_table_puts_params_first_and_drops_identity_keys() -> None:
    from sim.experiments.runner import tidy

    t = tidy(
        [
            ({"policy": "a", "seed": 0}, {"ttft_s": {"p50": 1.0}, "seed": 0, "policy": "x"}),
            ({"policy": "b", "seed": 1}, {"ttft_s": {"p50": 2.0}, "hit": 0.5, "seed": 1}),
        ]
    )
    assert list(t.columns) == ["policy", "seed", "ttft_s.p50", "hit"]
    assert t["policy"].tolist() == ["a", "b"]  # the parameter, not the summary's value
    assert t["ttft_s.p50"].tolist() == [1.0, 2.0]
    assert math.isnan(t["hit"][0]) and t["hit"][1] == 0.5


def test_runner_group_stats_by_two_columns_by_hand() -> None:
    from sim.experiments.runner import group_stats

    runs = pd.DataFrame(
        {
            "w": ["x", "x", "x", "x", "y", "y"],
            "n": [1, 1, 2, 2, 1, 1],
            "seed": [0, 1, 0, 1, 0, 1],
            "m": [1.0, 3.0, 5.0, 5.0, 2.0, 6.0],
        }
    )
    t = group_stats(runs, ["w", "n"], ["m"])
    assert t[["w", "n"]].values.tolist() == [["x", 1], ["x", 2], ["y", 1]]
    assert t["m"].tolist() == [2.0, 5.0, 4.0]
    # n = 2: t(0.975, 1) = 12.7062; sd of (1, 3) = sqrt(2): half-width 12.7062 * 1
    assert t["m.ci95"][0] == pytest.approx(12.7062, rel=1e-4)
    assert t["m.ci95"][1] == 0.0  # equal values
    assert t["m.ci95"][2] == pytest.approx(2 * 12.7062, rel=1e-4)
