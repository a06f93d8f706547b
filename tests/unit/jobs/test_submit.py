"""What `raydiant submit` sends (jobs/submit.py): the code and configs a job needs, never a
secret file, and a list of it shown before anything is sent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.submit import SubmitError, describe, package


def checkout(root: Path) -> Path:
    files = {
        "cluster/engine/renderer.py": "code", "serve/app.py": "code", "jobs/driver/job.py": "code",
        "configs/cluster.yaml": "models: {}", "pyproject.toml": "[project]",
        "configs/.env": "RAYDIANT_API_KEYS=real", "configs/signing.key": "k", "serve/auth_token": "t",
        "configs/prod-secret.yaml": "api_keys: [real]", "cluster/__pycache__/engine.cpython-311.pyc": "x",
        "infra/k8s/secret.yaml": "stringData: {api-keys: real}", "var/signing.key": "k", ".env": "X=1",
        "tests/test_x.py": "x", "README.md": "docs",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_only_code_and_configs_travel_and_no_secret_file(tmp_path):
    project = checkout(tmp_path / "project")
    out = tmp_path / "out"
    shipped = package(out, project)
    assert sorted(shipped) == ["cluster/engine/renderer.py", "configs/cluster.yaml", "jobs/driver/job.py", "pyproject.toml",
                               "serve/app.py"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == sorted(shipped)
    assert describe(shipped) == ("shipping 5 files: cluster/ (1 file), serve/ (1 file), jobs/ (1 file), "
                                 "configs/ (1 file), pyproject.toml")


def test_the_real_checkout_ships_no_infra_and_no_generated_key(tmp_path):
    shipped = package(tmp_path)
    assert shipped and all(name.split("/")[0] in ("cluster", "serve", "jobs", "configs", "pyproject.toml")
                           for name in shipped)
    assert not any(name.endswith((".key", ".pyc")) or ("secret" in name.lower() and not name.endswith(".py"))
                   for name in shipped)


def test_every_module_of_the_packages_ships(tmp_path):
    """A job imports any module: one left behind fails on the cluster (`cluster/doubles/
    tiny_tokenizers.py` was, by its name; a local cluster hid it, importing the installed copy)."""
    shipped = set(package(tmp_path))
    root = Path(__file__).resolve().parents[3]
    modules = {str(p.relative_to(root)) for top in ("cluster", "serve", "jobs") for p in (root / top).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - shipped == set()


def test_a_config_holding_a_secret_stops_the_submission_naming_the_field(tmp_path):
    inline = {"configs/inline.yaml": ("serve: {api_keys: [f3a9c2e81b7d4065]}\n", "serve.api_keys"),
              "configs/signing.yaml": ("storage: {signing_key: abc}\n", "storage.signing_key"),
              "configs/redis.yaml": ("tasks: {backend: redis, url: 'redis://:hunter2@redis:6379/1'}\n",
                                     "a password in a URL"),
              "configs/hub.yaml": ("# HF_TOKEN=hf_" + "a" * 34 + "\nmodels: {}\n", "a Hugging Face token")}
    for name, (text, what) in inline.items():
        project = checkout(tmp_path / name.replace("/", "-"))
        (project / name).write_text(text)
        with pytest.raises(SubmitError, match=f"^{name} holds {what}: a shipped file is readable"):
            package(tmp_path / f"out-{name.replace('/', '-')}", project)


def test_the_shipped_copy_imports_in_a_clean_interpreter(tmp_path):
    """The copy alone, not the checkout nor its editable install: the packages' dependencies
    from site-packages, raydiant's own code only from what was shipped."""
    package(tmp_path)
    checkout = str(Path(__file__).resolve().parents[3])
    probe = (f"import sys; sys.path[:] = [p for p in sys.path if p not in ('', {checkout!r})]; "
             "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
             "sys.path.insert(0, '.'); "
             "import cluster.cli, serve.app, jobs.driver.job, jobs.worker.unit_worker, cluster.doubles.tiny_tokenizers; "
             "print(cluster.cli.__file__)")
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == (tmp_path / "cluster" / "cli.py").resolve()
