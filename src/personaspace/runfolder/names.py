"""Every file name of a run folder, in one place (see ``personaspace.runfolder``)."""

from __future__ import annotations

CONFIG_FILE = "config.json"
SHARDS_DIR = "shards"
RESPONSES_FILE = "responses.jsonl"
SCORES_FILE = "scores.jsonl"
VECTORS_DIR = "vectors"
ROLES_FILE = f"{VECTORS_DIR}/roles.safetensors"
DEFAULT_FILE = f"{VECTORS_DIR}/default.safetensors"
TRAITS_FILE = f"{VECTORS_DIR}/traits.safetensors"
AXIS_FILE = "axis.safetensors"
CALIBRATION_FILE = "calibration.safetensors"
CAPPING_FILE = "capping.safetensors"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
VALIDATION_FILE = "validate.json"  # written by personaspace validate
# What a run writes, removed when a run with other settings replaces it (--force).
OUTPUTS = (
    RESPONSES_FILE,
    SCORES_FILE,
    VECTORS_DIR,
    AXIS_FILE,
    SUMMARY_FILE,
    REPORT_FILE,
    CALIBRATION_FILE,
    CAPPING_FILE,
    VALIDATION_FILE,
    CONFIG_FILE,
    SHARDS_DIR,
)
# The reference release's layout.
REFERENCE_AXIS = "axis.pt"
REFERENCE_DEFAULT = "default.pt"
REFERENCE_ROLES = "role_vectors"
REFERENCE_TRAITS = "trait_vectors"
