"""Paired tests, corrections and seed groups (recsys_cli/evaluation/stats.py and groups.py): known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sst

from recsys_cli.errors import ConfigError
from recsys_cli.evaluation.groups import differing_keys, group_indices, group_key, summarize
from recsys_cli.evaluation.stats import TESTS, adjust, paired_test


def test_holm_known_answers():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(adjust([0.01, 0.04, 0.03, 0.005], "holm"), [0.03, 0.06, 0.06, 0.02])
    # R: p.adjust(c(.01, .02, .03, .04, .05), "holm") = .05 .08 .09 .09 .09
    np.testing.assert_allclose(adjust([0.01, 0.02, 0.03, 0.04, 0.05], "holm"), [0.05, 0.08, 0.09, 0.09, 0.09])
    np.testing.assert_allclose(adjust([0.5, 0.9], "holm"), [1.0, 1.0])  # capped at 1
    out = adjust([0.01, math.nan, 0.02], "holm")  # NaN stays NaN and is not in the family (m = 2)
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_bonferroni_and_none():
    np.testing.assert_allclose(adjust([0.01, 0.04, 0.3], "bonferroni"), [0.03, 0.12, 0.9])
    np.testing.assert_allclose(adjust([0.01, 0.04, 0.3], "none"), [0.01, 0.04, 0.3])
    with pytest.raises(ConfigError, match="--correction 'bh' is not one of holm, bonferroni, none"):
        adjust([0.1], "bh")


@pytest.mark.parametrize("test", TESTS)
def test_identical_vectors_give_p_1(test):
    a = np.random.default_rng(0).random(300)
    result = paired_test(a, a.copy(), test)
    assert (result.p_value, result.mean_diff, result.effect_size, result.n) == (1.0, 0.0, 0.0, 300)


@pytest.mark.parametrize("test", TESTS)
def test_a_planted_shift_is_detected(test):
    rng = np.random.default_rng(1)
    b = rng.random(2000)
    a = b + 0.05 + rng.normal(0, 0.1, 2000)
    result = paired_test(a, b, test)
    assert result.p_value < 1e-3
    assert result.ci_low < 0.05 < result.ci_high and result.ci_low > 0
    assert result.effect_size == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))


def test_no_shift_is_not_significant():
    rng = np.random.default_rng(2)
    b = rng.random(500)
    a = b + rng.normal(0, 0.1, 500)  # noise only
    for test in TESTS:
        assert paired_test(a, b, test).p_value > 0.05


def test_p_values_and_intervals_are_scipys():
    rng = np.random.default_rng(3)
    b = rng.random(400)
    a = np.clip(b + rng.normal(0.01, 0.1, 400), 0, 1)
    a[:50] = b[:50]  # some zero differences, as with per-user metrics
    assert paired_test(a, b, "wilcoxon").p_value == sst.wilcoxon(a, b).pvalue
    t = sst.ttest_rel(a, b)
    result = paired_test(a, b, "ttest", confidence=0.9)
    assert result.p_value == t.pvalue
    assert (result.ci_low, result.ci_high) == tuple(t.confidence_interval(0.9))
    boot = paired_test(a, b, "bootstrap")
    again = paired_test(a, b, "bootstrap")
    assert boot == again  # fixed seed: the same vectors give the same answer
    ref = sst.bootstrap((a - b,), np.mean, n_resamples=2000, rng=np.random.default_rng(0), method="percentile")
    assert (boot.ci_low, boot.ci_high) == pytest.approx(tuple(ref.confidence_interval))


def test_bad_test_name_and_empty_vectors():
    with pytest.raises(ConfigError, match="--test 'anova' is not one of wilcoxon, ttest, bootstrap"):
        paired_test(np.ones(3), np.ones(3), "anova")
    assert math.isnan(paired_test(np.array([]), np.array([])).p_value)


@pytest.mark.parametrize("test", TESTS)
def test_one_pair_gives_no_effect_size_and_never_crashes(test):
    one = paired_test(np.array([0.5]), np.array([0.2]), test)
    assert one.n == 1 and one.mean_diff == pytest.approx(0.3)
    assert math.isnan(one.effect_size) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    if test == "wilcoxon":
        assert one.p_value == sst.wilcoxon([0.5], [0.2]).pvalue
    else:  # a t-test of one pair and a bootstrap of one value have no p-value
        assert math.isnan(one.p_value)
    # equal non-zero differences: no spread, an infinite standardised effect in the difference's direction
    assert paired_test(np.array([1.0, 2.0]), np.array([0.5, 1.5]), test).effect_size == math.inf


def test_group_summary_of_three_runs_by_hand():
    s = summarize([0.30, 0.32, 0.34])
    assert s.n == 3 and s.mean == pytest.approx(0.32) and s.sd == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) · sd / √3
    assert (s.ci_low, s.ci_high) == pytest.approx((0.32 - half, 0.32 + half))
    one = summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.sd) and math.isnan(one.ci_low)
    assert summarize([0.1, math.nan, 0.3]).n == 2


def test_groups_are_configs_differing_only_in_the_seed():
    def config(seed, l2=1.0, name="ease", runs="runs"):
        return {"experiment": {"name": name, "seed": seed, "runs_dir": runs},
                "model": {"name": "ease", "l2_norm": l2}, "evaluation": {"cutoffs": [10]}}

    configs = [config(0), config(1, name="ease-seed1"), config(0, l2=5.0), config(2, runs="elsewhere"),
               config(1, l2=5.0)]
    assert group_indices(configs) == [[0, 1, 3], [2, 4]]
    assert group_key(configs[0]) != group_key(configs[2])
    assert differing_keys(configs) == ["model.l2_norm"]
    dae = {"model": {"name": "dae", "hidden": [600, 200]}, "training": {"epochs": 3, "learning_rate": 0.001}}
    assert differing_keys([dae, {**dae, "training": {"epochs": 5, "learning_rate": 0.001}}]) == ["training.epochs"]


def test_keys_a_model_ignores_or_leaves_null_tell_no_runs_apart():
    ease = {"experiment": {"seed": 0}, "model": {"name": "ease", "l2_norm": 1.0}, "training": {"epochs": 30}}
    # EASE never trains: its training section keeps defaults that change nothing it computes
    assert group_key(ease) == group_key({**ease, "training": {"epochs": 3}})
    assert differing_keys([ease, {**ease, "training": {"epochs": 3}}]) == []
    dae = {"experiment": {"seed": 0}, "model": {"name": "dae", "noise_p": 0.5}, "training": {"epochs": 30}}
    assert group_key(dae) != group_key({**dae, "training": {"epochs": 3}})
    # null and absent are the same setting
    gfcf = {"model": {"name": "gfcf", "alpha": 1.0, "topk": None}}
    assert group_key(gfcf) == group_key({"model": {"name": "gfcf", "alpha": 1.0}})
    assert differing_keys([gfcf, {**ease, "training": {}}]) == ["model.name", "model.alpha", "model.l2_norm"]
    # a model key only one row has tells the rows apart; a training key only one row uses does not
    assert differing_keys([ease, dae]) == ["model.name", "model.l2_norm", "model.noise_p"]
    two = {**dae, "model": {"name": "two-tower", "variant": 1}, "training": {"epochs": 100}}
    assert differing_keys([ease, dae, two]) == ["model.name", "model.l2_norm", "model.noise_p", "training.epochs",
                                                "model.variant"]
    # a model this version does not know keeps every key
    unknown = {"model": {"name": "not-a-model"}, "training": {"epochs": 3}}
    assert group_key(unknown) != group_key({**unknown, "training": {"epochs": 4}})
    nameless = {"model": {"l2_norm": 1.0}, "training": {"epochs": 3}}  # a damaged config.yaml
    assert group_key(nameless) != group_key({**nameless, "training": {"epochs": 4}})


def test_what_a_run_keeps_on_disk_does_not_split_a_seed_group():
    base = {"experiment": {"seed": 0}, "model": {"name": "ease", "l2_norm": 1.0},
            "evaluation": {"save_recommendations": None}, "run": {"save_model": True, "plot_formats": ["png"]}}
    other = {"experiment": {"seed": 1}, "model": {"name": "ease", "l2_norm": 1.0},
             "evaluation": {"save_recommendations": 100}, "run": {"save_model": False, "plot_formats": ["pdf"]}}
    assert group_key(base) == group_key(other)
    assert group_key(base) != group_key({**other, "model": {"name": "ease", "l2_norm": 2.0}})
