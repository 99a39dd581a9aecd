"""The run folder of ``personaspace axis``: every file name it holds, and reading and writing
each part. Nothing else in personaspace names a file of a run.

Layout::

    RUN/
      config.json              the settings (and the model's shape) the run was made with
      shards/<shard>.safetensors  finished work: per-reply vectors + records (resume unit)
      responses.jsonl          one record per reply (prompt, question, reply, score, seed)
      scores.jsonl             the judge's scores alone
      vectors/roles.safetensors, vectors/default.safetensors, vectors/traits.safetensors
      axis.safetensors         the Assistant Axis [n_layers, hidden]
      calibration.safetensors  steering unit and projection percentiles (after calibration)
      capping.safetensors      capping experiments built from the calibration
      summary.json, report.html

A folder in the reference release's layout (``axis.pt``, ``default.pt``, ``role_vectors/``,
``trait_vectors/``) is read as well, through the safe tensor loader.
"""

from personaspace.runfolder.folder import RunFolder
from personaspace.runfolder.names import (
    AXIS_FILE,
    CALIBRATION_FILE,
    CAPPING_FILE,
    CONFIG_FILE,
    OUTPUTS,
    REPORT_FILE,
    RESPONSES_FILE,
    SUMMARY_FILE,
    VALIDATION_FILE,
)
from personaspace.runfolder.paths import calibration_for, load_axis, run_folder_for, run_vectors
from personaspace.runfolder.records import ResponseRecord, RunVectors

__all__ = [
    "AXIS_FILE",
    "CALIBRATION_FILE",
    "CAPPING_FILE",
    "CONFIG_FILE",
    "OUTPUTS",
    "REPORT_FILE",
    "RESPONSES_FILE",
    "SUMMARY_FILE",
    "VALIDATION_FILE",
    "ResponseRecord",
    "RunFolder",
    "RunVectors",
    "calibration_for",
    "load_axis",
    "run_folder_for",
    "run_vectors",
]
