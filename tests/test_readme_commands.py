"""Every command README.md and the pages of docs/ show in a ```bash block is either run here as written (the cheap
ones: --dry-run, --help, analysis and export of a fabricated experiment) or covered by a named test that runs it
with the same arguments on a tiny model. A new or changed command that fits neither fails this test. Every relative
link of those pages leads to a file (and heading) that exists."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PLACEHOLDER = "results/<experiment>"
# Long commands -> the test that runs them with the same arguments (file::function, checked to exist).
COVERED = {
    r"^pip install torch==2\.13\.0 && pip install -e '\.\[dev\]' .* && python -m pytest -q$": ".ci/run",
    r"^pip install torch==2\.13\.0 && pip install -e \. .* && python -m tuner\.run search_spaces/dpo\.yaml$":
        "tests/tuner/search/test_search_integration.py::dpo_run",
    r"^python -m tuner\.run search_spaces/dpo\.yaml$": "tests/tuner/search/test_search_integration.py::dpo_run",
    r"^python -m tuner\.run search_spaces/dpo\.yaml search\.num_samples=2 train\.max_steps=4$":
        "tests/tuner/search/test_search_integration.py::dpo_run",
    r"^python -m tuner\.run search_spaces/objectives\.yaml$":
        "tests/tuner/search/test_objectives_integration.py::"
        "test_objectives_runs_each_method_through_its_own_loss_and_ends_with_each_methods_best",
    r"^python -m tuner\.run search_spaces/orpo\.yaml --name \S+$":
        "tests/tuner/search/test_search_integration.py::test_orpo_search_reports_log_odds",
    r"^python -m tuner\.run search_spaces/dpo\.yaml --address HOST:6379$":
        "tests/tuner/search/test_cluster_integration.py::test_trials_run_on_both_nodes_of_a_cluster",
    r"^ray start --(head --port=6379|address=HEAD:6379)$":
        "tests/tuner/search/test_cluster_integration.py::two_node_cluster",
    r"^python -m tuner\.run search_spaces/dpo\.yaml run\.storage_path=/mnt/nfs/results --address HEAD:6379$":
        "tests/tuner/search/test_cluster_integration.py::test_trials_run_on_both_nodes_of_a_cluster",
    r"^python -m tuner\.run search_spaces/dpo\.yaml run\.storage_path=s3://BUCKET/tuner --name dpo-1 "
    r"--address HEAD:6379 search\.storage=postgresql://\S+$|^python -m tuner\.run --resume s3://BUCKET/tuner/dpo-1 "
    r"--address HEAD:6379$|^python -m (analysis|tuner\.export) s3://BUCKET/tuner/dpo-1( --out \S+)?$":
        "tests/tuner/experiment/test_object_storage_integration.py::"
        "test_search_in_object_storage_with_a_worker_that_cannot_see_the_driver",
    r"^python -m tuner\.run --resume results/<experiment>$":
        "tests/tuner/test_reliability_integration.py::test_sigkill_driver_then_resume_keeps_finished_trials",
    r"^python -m analysis\.generations results/<experiment>$":
        "tests/tuner/search/test_search_integration.py::test_generations_command_as_readme_writes_it",
    r"^python -m tuner\.run search_spaces/(dpo|orpo)_gpu\.yaml$":
        "tests/test_search_spaces.py::test_shipped_spec_validates",
    r"^pip install -e '\.\[gpu\]'$": "pyproject.toml::gpu",
    r"^python benchmarks/\w+\.py$": "tests/test_benchmarks.py",
    r"^python -m tuner\.run search_spaces/dpo\.yaml 'search\.space=\{\}' search\.num_samples=\d "
    r"train\.beta=0\.1 train\.learning_rate=5\.0e-6$":
        "tests/tuner/search/test_fixed_settings_integration.py::"
        "test_a_spec_without_a_space_runs_its_settings_over_training_seeds_and_ends_with_the_verdict",
    r"^python -m tuner\.run search_spaces/dpo\.yaml 'search\.baseline=\{train\.beta: 0\.1, "
    r"train\.learning_rate: 5\.0e-6\}'$":
        "tests/tuner/search/test_baseline_integration.py::"
        "test_a_search_with_a_baseline_ends_with_what_it_gained_over_the_users_settings",
}
# Cheap commands run as written (placeholders filled in), with what they must print.
RUN_AS_WRITTEN = {
    r"--dry-run": "search:",
    r"^python -m analysis results/<experiment>$": "report:",
    r"^python -m tuner\.export results/<experiment> --out \S+( \[--merge\])?$": "exported trial",
}


def readme_commands(text: str) -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines = [re.split(r"\s{2,}#", line)[0].rstrip() for line in block.splitlines()]
        joined = re.sub(r"\\\n\s*", "", "\n".join(lines))  # a trailing backslash continues the command
        for line in joined.splitlines():
            command = re.sub(r"\s+", " ", line).strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def classify(command: str) -> str:
    if any(re.search(pattern, command) for pattern in RUN_AS_WRITTEN):
        return "run"
    if any(re.search(pattern, command) for pattern in COVERED):
        return "covered"
    return "unknown"


def covered_by(command: str) -> str:
    return next(test for pattern, test in COVERED.items() if re.search(pattern, command))


PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = sorted({command for page in PAGES for command in readme_commands(page.read_text())})
README_COMMANDS = readme_commands((REPO / "README.md").read_text())


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in {
                slug(h) for h in re.findall(r"(?m)^#+ (.+)$", linked.read_text())}:
            broken.append(target)
    return broken


def test_the_docs_pages_exist_and_every_link_resolves():
    assert {p.name for p in PAGES} >= {"README.md", "spec.md", "how-a-search-runs.md", "resume-and-failures.md",
                                       "cluster-and-storage.md", "monitoring.md", "security.md", "trust.md",
                                       "performance.md", "gpu.md", "layout.md"}
    assert len((REPO / "README.md").read_text().splitlines()) < 150
    assert {page.name: broken_links(page) for page in PAGES if broken_links(page)} == {}


def test_a_broken_link_is_caught(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A part\n")
    page.write_text("[ok](other.md) [ok](other.md#a-part) [web](https://example.com) [gone](missing.md) "
                    "[no heading](other.md#nothing)\n")
    assert broken_links(page) == ["missing.md", "other.md#nothing"]


def test_the_docs_commands_are_collected():
    assert "python -m tuner.run search_spaces/dpo_gpu.yaml" in COMMANDS  # docs/gpu.md
    assert "ray start --head --port=6379" in COMMANDS  # docs/cluster-and-storage.md


def test_readme_shows_the_two_fresh_machine_commands():
    assert any(c.endswith("python -m tuner.run search_spaces/dpo.yaml") and c.startswith("pip install")
               for c in README_COMMANDS)
    assert any(c.endswith("python -m pytest -q") and c.startswith("pip install") for c in README_COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_readme_command_is_run_or_covered(command):
    assert classify(command) != "unknown", f"command neither run by this test nor covered: {command}"


def test_an_unknown_command_is_caught():
    assert classify("python -m tuner.frobnicate results/<experiment>") == "unknown"
    assert classify("python -m tuner.run search_spaces/dpo.yaml --no-such-flag") == "unknown"


@pytest.mark.parametrize("command", [c for c in COMMANDS if classify(c) == "covered"])
def test_covering_test_exists(command):
    target = covered_by(command)
    path, _, name = target.partition("::")
    text = (REPO / path).read_text()
    if path == ".ci/run":
        assert command in text, f".ci/run must run README's test command exactly: {command}"
    elif path == "pyproject.toml":
        assert re.search(rf"^{name} = \[", text, flags=re.M)
    elif name:
        assert re.search(rf"def {name}\(", text), target
    if command.startswith("python benchmarks/"):  # runs as written (the path form, not -m), cheaply
        script = command.split()[1]
        done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout, done.stderr[-2000:]
    if command.startswith("python -m tuner.run search_spaces/"):  # the same arguments validate as written
        done = subprocess.run(shlex.split(command) + ["--dry-run"], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("command", [c for c in COMMANDS if classify(c) == "run"])
def test_cheap_commands_run_as_written(command, scripted_experiment, tmp_path):
    filled = re.sub(r" \[(--\w+)\]", "", command).replace(PLACEHOLDER, str(scripted_experiment.path))
    filled = re.sub(r"--out (\S+)", lambda m: f"--out {tmp_path / m.group(1)}", filled)
    done = subprocess.run(shlex.split(filled), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    expected = next(out for pattern, out in RUN_AS_WRITTEN.items() if re.search(pattern, command))
    assert expected in done.stdout
