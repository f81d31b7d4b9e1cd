"""Which builder finishes the trees: ``choose_builder`` is the only place that names one (the
docker builder, or the local one), and only ``builders/`` mints or reads a builder's identity
(``builder_unchanged``). What a builder is lives in ``builders.contract``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from poetry_lambda_zip.builders.contract import Builder
    from poetry_lambda_zip.builders.contract import DockerSettings
    from poetry_lambda_zip.builders.contract import Progress
    from poetry_lambda_zip.builders.contract import Steps
    from poetry_lambda_zip.builders.contract import VerifyJob
    from poetry_lambda_zip.resolve import Requirement
    from poetry_lambda_zip.target import LambdaTarget

__all__ = [
    "WHEELS_ONLY",
    "builder_unchanged",
    "choose_builder",
    "identity_for",
    "image_to_check",
    "require_engine_for_verify",
    "verify_handler",
]

#: How the builders' identities begin (``DockerBuilder.identity``, ``LocalBuilder.identity``).
_DOCKER = "docker "
_LOCAL = "local"
#: The identity of a tree no toolchain finished (wheels unpacked, nothing compiled, built or
#: stripped): the same bytes from any builder and image (a test holds the builders to that).
WHEELS_ONLY = "wheels only"


def identity_for(builder: Builder, steps: Steps, progress: Progress) -> str:
    """The identity the fingerprints hold for a tree ``builder`` finishes with ``steps``:
    the builder's own (``docker IMAGE-ID``, ``local 3.11.9``) where its toolchain decides the
    bytes, else ``WHEELS_ONLY``."""
    return builder.identity(steps, progress) if steps.may_need_toolchain() else WHEELS_ONLY


def image_to_check(identity: str, image: str) -> str | None:
    """The image a later run must find with the same id for ``identity`` to hold (the docker
    builder's), else None."""
    return image if identity.startswith(_DOCKER) else None


def choose_builder(
    kind: str,
    built: Sequence[Requirement],
    target: LambdaTarget,
    docker: DockerSettings,
    progress: Progress,
) -> Builder:
    """The builder ``kind`` (--builder) names; for "auto" Docker when an engine answers, else
    the local builder when nothing must be ``built`` (every requirement has a wheel for the
    target)."""
    from poetry_lambda_zip.builders.docker import DockerBuilder
    from poetry_lambda_zip.builders.docker import engine_answers
    from poetry_lambda_zip.builders.docker import engine_location
    from poetry_lambda_zip.builders.local import LocalBuilder
    from poetry_lambda_zip.builders.local import no_wheel_error
    from poetry_lambda_zip.errors import DockerUnavailableError

    missing = list(built)
    runtime = target.runtime
    if kind == "local":
        if missing:
            raise no_wheel_error(missing, runtime)
        progress.info("Builder: local (--builder local)")
        return LocalBuilder()
    if kind == "docker" or engine_answers():
        if kind != "docker":
            progress.info(f"Builder: docker (an engine answers at {engine_location()})")
        for requirement in missing:
            progress.info(f"  {requirement.name} {requirement.version}: {requirement.describe()}")
        return DockerBuilder(docker)
    if missing:
        error = no_wheel_error(missing, runtime)
        raise DockerUnavailableError(
            f"{error.message}\nNo Docker engine is reachable at {engine_location()} either.",
            f"Start Docker or set DOCKER_HOST. {error.fix}",
        )
    progress.info(
        f"Builder: local (no Docker engine answers at {engine_location()}; every package has a"
        f" wheel for {runtime})"
    )
    return LocalBuilder()


def require_engine_for_verify() -> None:
    """--verify runs the image: without an engine, say so before anything is built."""
    from poetry_lambda_zip.builders.docker import engine_answers
    from poetry_lambda_zip.builders.docker import engine_location
    from poetry_lambda_zip.errors import DockerUnavailableError

    if not engine_answers():
        raise DockerUnavailableError(
            f"--verify imports the handler in the Lambda image, and no Docker engine answers"
            f" at {engine_location()}. Nothing was built.",
            "Start Docker or set DOCKER_HOST, or build without --verify.",
        )


def verify_handler(check: VerifyJob, docker: DockerSettings, progress: Progress) -> float:
    """Import the handler from the built zips as Lambda would, in the image; return the
    import time. Whatever built the zips, only an engine can run the image."""
    from poetry_lambda_zip.builders.docker import verify_in_image

    return verify_in_image(check, docker, progress)


def builder_unchanged(identity: str, image: str | None, kind: str) -> bool:
    """Whether the builder ``kind`` (--builder) would be the one whose ``identity`` an
    earlier build's fingerprints hold: the same image id for the docker builder; for a local
    builder chosen by "auto", still no engine to choose instead. Wheels alone ("wheels only")
    are the same bytes from any builder."""
    if identity.startswith(_DOCKER):
        from poetry_lambda_zip.builders.docker import image_id

        return image is not None and identity == f"{_DOCKER}{image_id(image)}"
    if identity.startswith(_LOCAL) and kind == "auto":
        from poetry_lambda_zip.builders.docker import engine_answers

        return not engine_answers()
    return True
