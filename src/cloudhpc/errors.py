"""One root exception with narrow subclasses; front ends turn them into one line + hint."""

from __future__ import annotations

from collections.abc import Sequence


class CloudHPCError(Exception):
    """Root of every error cloudhpc raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        if hint:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class TemplateError(CloudHPCError):
    """The template is invalid; carries every finding."""

    def __init__(self, findings: Sequence[object], source: str = "") -> None:
        self.findings = findings
        self.source = source
        first = findings[0] if findings else "invalid template"
        super().__init__(f"{source}: {first}" if source else str(first))


class CommandError(CloudHPCError):
    """An external command failed: carries command, exit code, stdout and stderr."""

    def __init__(self, cmd: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.cmd = cmd
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip().splitlines()
        last = detail[-1] if detail else "no output"
        super().__init__(f"`{' '.join(cmd[:4])}{' ...' if len(cmd) > 4 else ''}` "
                         f"exited {returncode}: {last}")


class MissingPackageError(CloudHPCError):
    def __init__(self, program: str, package: str) -> None:
        super().__init__(
            f"required program '{program}' not found (Debian package '{package}')",
            hint=f"install it with: apt-get install -y {package}  (or run `make install`)",
        )


class NotRootError(CloudHPCError):
    def __init__(self) -> None:
        super().__init__(
            "the local provider needs root (it creates network namespaces and bridges)",
            hint="run again as root, e.g. with sudo",
        )


class ClusterNotFound(CloudHPCError):
    pass


class ClusterExists(CloudHPCError):
    pass


class ProvisionError(CloudHPCError):
    """A step of bringing a cluster up failed; names the step."""

    def __init__(self, step: str, cause: str, hint: str = "") -> None:
        self.step = step
        self.cause = cause
        super().__init__(f"cluster creation failed at step '{step}': {cause}", hint=hint)


class JobError(CloudHPCError):
    pass


class NodeNotFound(CloudHPCError):
    pass


class StorageError(CloudHPCError):
    """A blob operation that failed, named with the blob it was about."""
