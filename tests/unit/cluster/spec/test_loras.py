"""What a request may name as a LoRA adapter (cluster/spec/loras.py), checked by `ModelSpec.resolve`:
kinds, the local root, storage prefixes, pickles, counts, scales; and the adapter set's id."""

from __future__ import annotations

import os

import pytest

from cluster.spec.config import load_config
from cluster.spec.errors import ErrorCode, RenderError
from cluster.spec.loras import Lora, LoraPolicy, LoraRef, adapter_set_id, lora_flag_item, read_lora_list, resolve_loras
from cluster.spec.request import RenderRequest


def policy(tmp_path, **changes) -> LoraPolicy:
    return LoraPolicy(named={"ghibli": "s3://team/loras/ghibli.safetensors"}, local_root=str(tmp_path / "loras"),
                      fsspec_prefixes=["s3://public-loras/"], **changes)


@pytest.mark.parametrize(("path", "kind", "location"), [
    ("ghibli", "fsspec", "s3://team/loras/ghibli.safetensors"),  # configured: its location may be anywhere
    ("https://cdn.example.com/a/style.safetensors", "https", "https://cdn.example.com/a/style.safetensors"),
    ("http://127.0.0.1:8080/style.safetensors", "https", "http://127.0.0.1:8080/style.safetensors"),
    ("org/repo", "hub", "org/repo/pytorch_lora_weights.safetensors"),
    ("org/repo/sub/w.safetensors", "hub", "org/repo/sub/w.safetensors"),
    ("s3://public-loras/x.safetensors", "fsspec", "s3://public-loras/x.safetensors"),
])
def test_each_kind_of_path(tmp_path, path, kind, location):
    [lora] = resolve_loras((LoraRef(path, 0.5),), policy(tmp_path), "flux-dev")
    assert (lora.kind, lora.location, lora.path, lora.scale) == (kind, location, path, 0.5)


def test_local_paths_stay_under_the_root(tmp_path):
    root = tmp_path / "loras"
    (root / "styles").mkdir(parents=True)
    [lora] = resolve_loras((LoraRef("./styles/a.safetensors"),), policy(tmp_path), "m")
    assert lora.kind == "local" and lora.location == str(root.resolve() / "styles" / "a.safetensors")
    [absolute] = resolve_loras((LoraRef(str(root / "b.safetensors")),), policy(tmp_path), "m")
    assert absolute.location == str(root.resolve() / "b.safetensors")
    os.symlink("/etc", root / "escape")
    for path in ("../outside.safetensors", "./styles/../../outside.safetensors", "/etc/x.safetensors",
                 "./escape/passwd.safetensors"):
        error = resolve_loras((LoraRef(path),), policy(tmp_path), "m")
        assert error.code == ErrorCode.INVALID_PARAMETER and "leaves loras.local_root" in error.message, path
    no_root = resolve_loras((LoraRef("./a.safetensors"),), LoraPolicy(), "m")
    assert "no loras.local_root is configured" in no_root.message


@pytest.mark.parametrize(("path", "words"), [
    ("https://x.example/model.bin", "pickle file"),
    ("org/repo/w.ckpt", "pickle file"),
    ("./a.pt", "pickle file"),
    ("https://x.example/page.html", "URL of a .safetensors file"),
    ("s3://private-bucket/x.safetensors", "outside the configured loras.fsspec_prefixes"),
    ("file:///etc/x.safetensors", "outside the configured loras.fsspec_prefixes"),
    ("not a path", "is not a configured name"),
    ("a/b.safetensors", "is not a configured name"),  # ambiguous: ./a/b.safetensors or a hub repo
    ("", "path must not be empty"),
])
def test_refused_paths_name_the_parameter(tmp_path, path, words):
    error = resolve_loras((LoraRef(path),), policy(tmp_path), "m")
    assert error.param == "loras" and words in error.message, error.message


def test_counts_scales_duplicates_and_kinds_a_model_takes(tmp_path):
    two = (LoraRef("org/a"), LoraRef("org/b"))
    assert "at most 1 for model m" in resolve_loras(two, policy(tmp_path, max=1), "m").message
    assert "are not taken by model m" in resolve_loras(two, policy(tmp_path, max=0), "m").message
    assert "scale must be -4..4" in resolve_loras((LoraRef("org/a", 5.0),), policy(tmp_path), "m").message
    assert "scale must be a number" in resolve_loras((LoraRef("org/a", float("nan")),), policy(tmp_path), "m").message
    assert "already in the list" in resolve_loras((LoraRef("org/a"), LoraRef("org/a", 0.3)), policy(tmp_path),
                                                  "m").message
    hub_only = policy(tmp_path, sources=["hub"])
    assert "https adapters are not taken by this model" in resolve_loras(
        (LoraRef("https://x.example/a.safetensors"),), hub_only, "m").message
    assert "configured adapters are not taken" in resolve_loras((LoraRef("ghibli"),), hub_only, "m").message


def test_the_set_id_depends_on_locations_scales_and_order():
    a, b = Lora("a", "hub", "org/a/w.safetensors", 1.0), Lora("b", "hub", "org/b/w.safetensors", 0.5)
    assert adapter_set_id(()) == ""
    assert adapter_set_id((a, b)) == adapter_set_id((a, b))
    assert len({adapter_set_id((a, b)), adapter_set_id((b, a)), adapter_set_id((a,)),
                adapter_set_id((Lora("a", "hub", "org/a/w.safetensors", 0.9), b))}) == 4


def test_the_config_sets_each_models_policy_and_resolve_checks_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"""
models:
  flux-schnell: {{source: "tiny:flux", max_loras: 1, lora_sources: [named, local]}}
  flux-dev: {{source: "tiny:flux"}}
loras: {{named: {{house: "org/house-style"}}, local_root: "{tmp_path}"}}
""")
    loaded = load_config(config)
    schnell, dev = loaded.spec("flux-schnell"), loaded.spec("flux-dev")
    assert (schnell.loras.max, schnell.loras.sources) == (1, ["named", "local"]) and dev.loras.max == 3
    resolved = schnell.resolve(RenderRequest(model="flux-schnell", prompt="x", loras=(LoraRef("house", 0.8),)))
    # The operator's own adapter: fetched with the service's credentials (a caller's never is).
    assert resolved.loras == (Lora("house", "hub", "org/house-style/pytorch_lora_weights.safetensors", 0.8,
                                   trusted=True),)
    refused = schnell.resolve(RenderRequest(model="flux-schnell", prompt="x", loras=(LoraRef("org/other"),)))
    assert refused.param == "loras" and "hub adapters are not taken" in refused.text()


@pytest.mark.parametrize(("path", "words"), [
    ("s3://bucket/loras/../private/x.safetensors", "'..' segments"),
    ("s3://bucket/loras-private/x.safetensors", "outside the configured loras.fsspec_prefixes"),
    ("gs://bucket/loras/x.safetensors", "outside the configured loras.fsspec_prefixes"),
    ("simplecache::s3://bucket/loras/x.safetensors", "chained storage URI"),
    ("org/../x.safetensors", "'..' segment"),
    ("https://user:secret@cdn.example.com/x.safetensors", "must not carry credentials"),
    ("./a\x00b.safetensors", "control characters"),
    ("http://[x.safetensors", "not a valid http(s) URL"),
    ("https://cdn.example.com:99999/x.safetensors", "not a valid http(s) URL"),
])
def test_caller_paths_that_leave_their_limits_are_refused(path, words):
    policy = LoraPolicy(fsspec_prefixes=["s3://bucket/loras"], local_root="/tmp")
    refused = resolve_loras((LoraRef(path),), policy, "flux-schnell")
    assert isinstance(refused, RenderError) and refused.param == "loras" and words in refused.message, refused


def test_a_set_is_one_set_in_any_order():
    policy = LoraPolicy()
    a, b = LoraRef("org/a", 0.7), LoraRef("org/b", 0.5)
    assert resolve_loras((a, b), policy, "m") == resolve_loras((b, a), policy, "m")
    inside = resolve_loras((LoraRef("s3://bucket/loras/x/y.safetensors"),),
                           LoraPolicy(fsspec_prefixes=["s3://bucket/loras/"]), "m")
    assert inside[0].kind == "fsspec"


def test_one_reader_for_a_list_its_json_text_and_command_line_flags():
    expected = (LoraRef("org/style", 0.5), LoraRef("org/b", 1.0))
    assert read_lora_list([{"path": "org/style", "scale": 0.5}, {"path": "org/b"}]) == expected
    assert read_lora_list('[{"path": "org/style", "scale": 0.5}, {"path": "org/b", "scale": null}]') == expected
    assert read_lora_list([lora_flag_item("org/style@0.5"), lora_flag_item("org/b")]) == expected
    # `@` ends a path only before a number: URLs and paths keep theirs.
    assert read_lora_list([lora_flag_item("https://h/a@b.safetensors")]) == (LoraRef("https://h/a@b.safetensors"),)


@pytest.mark.parametrize("value, words", [
    ({"path": "a"}, "must be a list of at most 16"),
    ([{"path": "a"}] * 17, "must be a list of at most 16"),
    ("not json", "must be a JSON list"),
    ("[" * 40_000 + "]" * 40_000, "of at most 65536 characters"),
    ("[" * 30_000 + "]" * 30_000, "must be a JSON list"),  # nested past the parser's depth
    (["org/a"], "item 0 must be an object"),
    ([{"path": "org/a", "weight": 1}], "item 0 has an unknown field 'weight'"),
    ([{"path": ""}], "item 0 needs a path"),
    ([{"path": 3}], "item 0 needs a path"),
    ([{"path": "a", "scale": True}], "item 0 scale must be a number, got 'True'"),
    ([{"path": "a", "scale": "1"}], "item 0 scale must be a number"),
    ([{"path": "a", "scale": 10 ** 400}], "item 0 scale must be a number in range"),
    ([{"path": "a", "scale": float("nan")}], "item 0 scale must be a finite number"),
])
def test_a_list_that_cannot_be_read_is_refused_naming_loras(value, words):
    error = read_lora_list(value)
    assert isinstance(error, RenderError) and error.code == ErrorCode.INVALID_PARAMETER and error.param == "loras"
    assert words in error.text(), error.text()
