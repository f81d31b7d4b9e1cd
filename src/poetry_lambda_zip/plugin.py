"""Poetry application plugin: registers ``poetry lambda-zip``, nothing else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from poetry.plugins.application_plugin import ApplicationPlugin

if TYPE_CHECKING:
    from poetry.console.application import Application
    from poetry.console.commands.command import Command

__all__ = ["LambdaZipPlugin"]

COMMAND_NAME = "lambda-zip"


def _command() -> Command:
    # Imported on use: every `poetry` invocation loads plugins, few of them run this one.
    from poetry_lambda_zip.command import LambdaZipCommand

    return LambdaZipCommand()


class LambdaZipPlugin(ApplicationPlugin):
    def activate(self, application: Application) -> None:
        application.command_loader.register_factory(COMMAND_NAME, _command)
