"""Names, never server paths, for what the training and registry pages show: a start adapter, a checkpoint,
a data file, a command line.

A directory that is a registered model version's adapter is named by the version ("guardsite-guard-270m");
a training job's directory by the job ("job 12, checkpoint-3"); anything else by its last component.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

from guard.models import ModelVersion

# An absolute or home-relative path inside a command line.
_PATH = re.compile(r"(?<![\w=])(?:~|/)[^\s'\"]*")


def path_name(value: str | None) -> str:
    """What an operator knows ``value`` (a path, or already a name) by."""
    text = (value or "").strip()
    if not text or not (text.startswith("/") or text.startswith("~")):
        return text
    path = Path(text).expanduser()
    version = ModelVersion.objects.filter(adapter_path__in=[text, str(path)]).only("name").first()
    if version is not None:
        return version.name
    return _job_relative(path) or path.name or text


def _job_relative(path: Path) -> str:
    """``job-12/checkpoint-3`` under the training output folder -> "job 12, checkpoint-3"."""
    try:
        relative = path.resolve().relative_to(Path(settings.TRAINING_OUTPUT_DIR).resolve())
    except (ValueError, OSError):
        return ""
    parts = relative.parts
    if not parts or not parts[0].startswith("job-"):
        return ""
    job = f"job {parts[0].removeprefix('job-')}"
    return ", ".join([job, *parts[1:]]) if len(parts) > 1 else f"{job} output"


def command_names(command: str | None) -> str:
    """A command line with every path replaced by its name (the shape of the command stays)."""
    return _PATH.sub(lambda match: path_name(match.group(0)) or match.group(0), command or "")
