"""One job submission, as every front end states it: the CLI, the Python API, the REST API
(its request body) and the remote client (which sends it) share this model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudhpc.errors import JobError

NAME_PATTERN = r"^[A-Za-z0-9_.+-]{1,64}$"


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    script: str = Field(min_length=1, max_length=1_000_000,
                        description="the batch script's text (#SBATCH lines are kept)")
    name: str = Field("job", pattern=NAME_PATTERN, description="job name")
    nodes: int | None = Field(None, ge=1, le=10000)
    ntasks_per_node: int | None = Field(None, ge=1, le=1024)
    partition: str | None = Field(None, pattern=r"^[a-z][a-z0-9]{0,11}$")
    stage_in: list[str] = Field(default_factory=list, max_length=100,
                                description="blob://CONTAINER/PATH[:DEST]")
    stage_out: list[str] = Field(default_factory=list, max_length=100,
                                 description="SRC:blob://CONTAINER/PATH")
    exe: list[str] = Field(default_factory=list, max_length=20,
                           description="programs in blob storage put on the job's PATH")
    time_limit: int | None = Field(None, ge=1, le=525600,
                                   description="minutes the job may run (Slurm's --time)")

    @classmethod
    def of(cls, script: str | Path | JobRequest, **fields: Any) -> JobRequest:
        """A request from a script file (its name is the job's unless given) or a request
        with FIELDS changed; bad values raise JobError naming the field."""
        if isinstance(script, JobRequest):
            data = {**script.model_dump(), **{k: v for k, v in fields.items()
                                              if v is not None}}
        else:
            path = Path(script)
            if not path.is_file():
                raise JobError(f"job script not found: {path}",
                               hint="give the path of a batch script")
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise JobError(f"cannot read job script {path}: {exc}",
                               hint="a batch script is a UTF-8 text file") from None
            data = {"script": text, "name": fields.pop("name", None) or path.stem,
                    **{k: v for k, v in fields.items() if v is not None}}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "request"
            ctx = first.get("ctx", {})
            msg = {"greater_than_equal": f"must be at least {ctx.get('ge')}",
                   "less_than_equal": f"must be at most {ctx.get('le')}",
                   "string_pattern_mismatch": "has characters it may not have "
                   f"(allowed: {ctx.get('pattern')})"}.get(first["type"], first["msg"])
            raise JobError(f"--{field.replace('_', '-')} {msg}",
                           hint="see `cloudhpc submit --help`") from None
