"""Partial information decomposition: closed forms on the known-answer worlds, maps, identities,
cost and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from infodecomp.estimators import Term, integrate
from infodecomp.estimators.pid import (
    ATOMS,
    PIDResult,
    check_pid_conditions,
    partial_information,
    pid_terms,
)
from infodecomp.evaluation import pid_conditions, pid_from_samples
from infodecomp.tasks.images import PIDWorld, TwoObjectShapesWorld

N_ITEMS, N_DRAWS = 512, 64


def _conditions(world: PIDWorld, n: int = N_ITEMS, seed: int = 1):
    b = world.sample(n, seed=seed)
    return b, pid_conditions({k: b.labels[k] for k in ("y1", "y2")}, "y1", "y2")


def _close(est, exact: float, i12: float) -> bool:
    """Within max(3 SE, 2% of the world's information): the acceptance tolerance of issue 15."""
    return abs(float(est.value) - exact) <= max(3 * float(est.se), 0.02 * i12)


@pytest.mark.parametrize(("kind", "measure"), [("redundant", "pointwise-min"), ("unique", "pointwise-min"),
                                               ("synergy", "pointwise-min"), ("copy", "pointwise-min"),
                                               ("redundant", "mmi"), ("unique", "mmi"), ("synergy", "mmi"),
                                               ("copy", "mmi")])
def test_exact_oracle_atoms_match_the_closed_form(kind: str, measure: str) -> None:
    world = PIDWorld(kind)
    b, conds = _conditions(world)
    res = partial_information(world.oracle(), b.x, conds, measure=measure, n_draws=N_DRAWS)
    exact = world.exact_pid(measure, n=4000)
    assert exact["i12"] > 0.6  # a world that carries information at all
    for name, est in {**res.information, **res.atoms}.items():
        assert _close(est, exact[name], exact["i12"]), (kind, measure, name, float(est.value), float(est.se),
                                                        exact[name])
    nonzero = {a for a in ATOMS if exact[a] > 0.1}
    expected = {"redundant": {"redundancy"}, "unique": {"unique1"}, "synergy": {"synergy"},
                "copy": {"unique1", "unique2"} if measure == "pointwise-min" else {"redundancy", "synergy"}}[kind]
    assert nonzero == expected


def test_the_measures_disagree_on_the_two_bit_copy_as_their_closed_forms_say() -> None:
    world = PIDWorld("copy")
    pm, mmi = world.exact_pid("pointwise-min", n=4000), world.exact_pid("mmi", n=4000)
    assert pm["redundancy"] == 0.0 and pm["synergy"] == pytest.approx(0.0, abs=0.01)
    assert mmi["redundancy"] == pytest.approx(min(mmi["i1"], mmi["i2"]))
    assert mmi["synergy"] == pytest.approx(mmi["i12"] - max(mmi["i1"], mmi["i2"]))
    assert mmi["i12"] == pytest.approx(2 * math.log(2), rel=0.01)


@pytest.mark.parametrize("kind", ["redundant", "unique", "synergy", "copy"])
def test_exact_maps_put_each_atom_where_the_world_draws_it(kind: str) -> None:
    world = PIDWorld(kind)
    b, conds = _conditions(world, n=64)
    res = partial_information(world.oracle(), b.x, conds, reduction="pixel", n_draws=16)
    for atom, obj in world.atom_masks().items():
        m = res.atoms[atom].value
        inside = (m * b.masks[:, obj]).flatten(1).sum(1) / m.flatten(1).sum(1)
        assert inside.min() > 0.999, (kind, atom, inside.min())
    for atom in set(ATOMS) - set(world.atom_masks()):  # the other atoms are zero everywhere
        assert res.atoms[atom].value.abs().max() < 1e-6 * max(1.0, float(res.information["i12"].value.max()))


def _noisy(denoiser, scale: float):
    """The exact denoiser plus noise that depends on the condition: a model whose branches err."""
    def f(z, logsnr, cond=None):  # noqa: ANN001, ANN202
        out = denoiser(z, logsnr, cond)
        key = 0 if cond is None else sum(v.sum().item() * (i + 1) for i, v in enumerate(cond.values()))
        gen = torch.Generator().manual_seed(int(key) % 1000 + int(1e6 * float(logsnr.sum())) % 1000)
        return out + scale * torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return f


def test_atoms_add_up_per_pixel_and_only_synergy_can_be_negative() -> None:
    world = PIDWorld("copy")
    b, conds = _conditions(world, n=16)
    res = partial_information(_noisy(world.oracle(), 0.05), b.x, conds, reduction="pixel", n_draws=8)
    a, i = {k: e.value for k, e in res.atoms.items()}, {k: e.value for k, e in res.information.items()}
    torch.testing.assert_close(a["redundancy"] + a["unique1"], i["i1"])
    torch.testing.assert_close(a["redundancy"] + a["unique2"], i["i2"])
    torch.testing.assert_close(a["redundancy"] + a["unique1"] + a["unique2"] + a["synergy"], i["i12"])
    for atom in ("redundancy", "unique1", "unique2"):
        assert a[atom].min() >= 0
    assert a["synergy"].min() < 0  # reported as it comes, not clipped
    # each atom has its own paired SE; _noisy keys its noise on the labels' sum, so one of the 16 items
    # gets the same noise in every branch and an exactly zero synergy (SE 0, with the float64 oracle)
    se = res.atoms["synergy"].se
    assert se.shape == a["synergy"].shape and se.ge(0).all() and se.gt(0).float().mean() > 0.9


def test_pid_costs_four_conditions_per_draw_in_one_forward_and_equals_term_by_term() -> None:
    world = PIDWorld("synergy")
    oracle = world.oracle()
    b, conds = _conditions(world, n=8)
    calls: list[int] = []

    def counting(z, logsnr, cond=None):  # noqa: ANN001, ANN202
        calls.append(z.shape[0])
        return oracle(z, logsnr, cond)

    counting.batch_conditions = oracle.batch_conditions
    res = partial_information(counting, b.x, conds, reduction="pixel", n_draws=8)
    assert sum(calls) == 4 * 8 * 8 and res.nfe == 4 * 8
    # all four conditions of every draw of an item in one forward: whole items per forward (the
    # CPU's forwards hold at most 341 rows of these 3x16x16 images, so 5 items, then 3)
    assert len(calls) <= 2 and all(c % (4 * 8) == 0 for c in calls), calls
    by_term = {}
    for name, term in pid_terms("pointwise-min").items():
        by_term[name] = integrate(oracle, b.x, {n: conds[n] for n in term.names}, {"t": term}, n_draws=8,
                                  reduction="pixel")["t"].value
    for name in ATOMS:
        torch.testing.assert_close(res.atoms[name].value, by_term[name])


def test_gathered_totals_give_the_image_level_atoms() -> None:
    world = PIDWorld("copy")
    b, conds = _conditions(world, n=32)
    for measure in ("pointwise-min", "mmi"):
        direct = partial_information(world.oracle(), b.x, conds, measure=measure, n_draws=8)
        raw = integrate(world.oracle(), b.x, conds, pid_terms(measure), n_draws=8, reduction="sample")
        halves = {k: torch.cat([e.value[:16], e.value[16:]]) for k, e in raw.items()}  # two "processes"
        gathered = pid_from_samples(halves, measure, raw["i1"].nfe)
        assert isinstance(gathered, PIDResult) and gathered.weaker == direct.weaker
        for name in ATOMS:
            torch.testing.assert_close(gathered.atoms[name].value, direct.atoms[name].value.double())
            torch.testing.assert_close(gathered.atoms[name].se, direct.atoms[name].se.double())


def test_conditional_pid_given_a_third_variable() -> None:
    """Given the colour, shape and position of the shapes world carry no redundancy or synergy
    in a world where each is drawn independently... except through the pixels they share."""
    from infodecomp.tasks.images import ShapesWorld

    world = ShapesWorld(grid=2)
    b = world.sample(256, seed=3)
    cond = {k: b.labels[k] for k in world.attributes}
    conds = pid_conditions(cond, "colour", "position", given=["shape"])
    assert conds["base"] == {"shape": cond["shape"]} and set(conds["both"]) == {"shape", "colour", "position"}
    res = partial_information(world.oracle(), b.x, conds, n_draws=32)
    i1 = world.mutual_information("colour", given=("shape",), n=4000).item()
    assert abs(float(res.information["i1"].value) - i1) < max(3 * float(res.information["i1"].se), 0.02 * i1)
    for name in ATOMS:  # the identities hold whatever the world
        assert torch.isfinite(res.atoms[name].value)


def test_bad_input_gives_one_clear_error() -> None:
    cond = {"y1": torch.zeros(4, dtype=torch.long), "y2": torch.ones(4, dtype=torch.long)}
    with pytest.raises(ValueError, match="two different variables, got 'y1' twice"):
        pid_conditions(cond, "y1", "y1")
    with pytest.raises(ValueError, match="'colour' is not among the model's conditions"):
        pid_conditions(cond, "y1", "colour")
    with pytest.raises(ValueError, match="cannot also be given"):
        pid_conditions(cond, "y1", "y2", given=["y1"])
    with pytest.raises(ValueError, match="PID needs the conditions"):
        check_pid_conditions({"both": cond, "first": None})
    with pytest.raises(ValueError, match="measure must be one of"):
        pid_terms("williams-beer")
    with pytest.raises(ValueError, match="kind must be one of"):
        PIDWorld("xor")
    with pytest.raises(ValueError, match="second scored condition"):
        Term("redundancy", "a", "b")
    with pytest.raises(ValueError, match="'sum' term needs parts"):
        Term("sum", parts=((Term("nll", "a"), 1.0),))


def test_word_pid_on_the_exact_two_object_denoiser() -> None:
    from infodecomp.probes.oracle import shapes_text_oracle
    from infodecomp.probes.pid import word_pid

    world = TwoObjectShapesWorld(size=16)
    b = world.sample(64, seed=2)
    oracle = shapes_text_oracle(world)
    wp = word_pid(oracle, b.x, b.captions, (1, 2), n_draws=16)  # colour and shape of the first object
    assert wp.conditions["base"][0] == " ".join(w for i, w in enumerate(b.captions[0].split()) if i not in (1, 2))
    t = wp.totals()
    i1, se = float(t["i1"].mean()), float(t["i1"].std() / math.sqrt(64))
    assert abs(i1 - math.log(3)) < 3 * se  # the colour given the rest
    torch.testing.assert_close(t["redundancy"] + t["unique1"] + t["unique2"] + t["synergy"], t["i12"])
    left = word_pid(oracle, b.x, b.captions, (1, -2), n_draws=16)  # the colours of the two objects
    assert left.pairs[0] == (b.captions[0].split()[1], b.captions[0].split()[-2])
    # two objects in different places: no pointwise redundancy for the exact denoiser
    assert float(left.totals()["redundancy"].abs().max()) < 1e-6


def test_word_pid_rejects_bad_words_and_models() -> None:
    from infodecomp.probes.oracle import shapes_text_oracle
    from infodecomp.probes.pid import word_pid

    world = TwoObjectShapesWorld(size=16)
    b = world.sample(2, seed=0)
    oracle = shapes_text_oracle(world)
    caption = "a red circle left of a blue square"
    with pytest.raises(ValueError, match="'dog' is not in the caption"):
        word_pid(oracle, b.x[:1], [caption], ("red", "dog"))
    with pytest.raises(ValueError, match="the same word twice"):
        word_pid(oracle, b.x[:1], [caption], ("red", 1))
    with pytest.raises(ValueError, match="occurs 2 times"):
        word_pid(oracle, b.x[:1], [caption], ("a", "red"))
    with pytest.raises(ValueError, match="exactly two words"):
        word_pid(oracle, b.x[:1], [caption], ("red",))
    with pytest.raises(ValueError, match="text probes need a text-conditioned model"):
        word_pid(PIDWorld().oracle(), b.x[:1], [caption], ("red", "circle"))
