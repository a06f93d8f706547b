from cluster.spec.seeding import MAX_SEED, derive_seed, image_seeds


def test_image_seeds_offset_from_request_seed():
    assert image_seeds(42, 4) == [42, 43, 44, 45]


def test_derived_seeds_are_stable_and_spread():
    assert derive_seed(7, "row-1") == derive_seed(7, "row-1")
    seeds = {derive_seed(7, f"row-{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= s <= MAX_SEED for s in seeds)
    assert derive_seed(8, "row-1") != derive_seed(7, "row-1")
