"""What `raydiant submit` sends (jobs/submit.py): the code and configs a job needs, never a
secret file, and a list of it shown before anything is sent."""

from __future__ import annotations

from pathlib import Path

from jobs.submit import describe, package


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
