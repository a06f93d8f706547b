"""The run manifest (jobs/driver/manifest.py): the config without its secrets, and a rerun refused when
the output holds another dataset."""

from __future__ import annotations

import json

import pytest

from cluster.spec.config import RaydiantConfig, load_config
from cluster.storage.results import Storage
from jobs.driver.manifest import ManifestMismatch, build, check_resume, redacted, write
from jobs.driver.plan import InputFile
from jobs.driver.spec import JobSpec


def test_the_config_is_written_without_keys_secrets_or_url_credentials():
    config = load_config().model_copy(deep=True)
    data = config.model_dump()
    data["serve"]["api_keys"] = ["sk-live-123"]
    data["serve"]["webhooks"]["secret"] = "whsec_abc"
    data["storage"]["signing_key"] = "hmac-key"
    data["tasks"]["url"] = "redis://:hunter2@redis:6379/0"
    text = json.dumps(redacted(RaydiantConfig.model_validate(data)))
    assert not any(secret in text for secret in ("sk-live-123", "whsec_abc", "hmac-key", "hunter2"))
    assert "redis:6379" in text  # where the store is stays readable


def test_a_rerun_for_another_dataset_is_refused_naming_what_differs(tmp_path):
    storage, config = Storage(str(tmp_path / "out")), load_config()
    inputs = [InputFile("in.parquet", 10, "a" * 64)]
    spec = JobSpec(input="in.parquet", output=str(tmp_path / "out"), shard_size=100)
    assert check_resume(storage, build(spec, config, inputs)) is False  # a new output
    write(storage, build(spec, config, inputs))
    assert check_resume(storage, build(spec.model_copy(update={"batch_size": 8}), config, inputs)) is True
    with pytest.raises(ManifestMismatch, match=r"shard_size: 100 before, 50 now"):
        check_resume(storage, build(spec.model_copy(update={"shard_size": 50}), config, inputs))
    with pytest.raises(ManifestMismatch, match="inputs"):
        check_resume(storage, build(spec, config, [InputFile("in.parquet", 10, "b" * 64)]))
