"""PostgresUpsertComponent: the resource and IO manager, declared in a component's YAML."""

from __future__ import annotations

from dagster import Definitions, EnvVar
from dagster.components import Component, ComponentLoadContext, Model, Resolvable
from pydantic import Field

from .io_manager import PostgresUpsertIOManager
from .resource import PostgresResource


class PostgresUpsertComponent(Component, Resolvable, Model):
    """Provides ``postgres`` (a :class:`PostgresResource`) and ``io_manager`` (a
    :class:`PostgresUpsertIOManager`) to the assets of a Dagster project, from YAML.

    The URL is read from the environment variable that ``url_env_var`` names, at run time:
    the YAML, and so the UI, only ever show that name, never the secret.

    Examples:
        ``defs/postgres/defs.yaml``:

        .. code-block:: yaml

            type: resources.component.PostgresUpsertComponent
            attributes:
              url_env_var: WAREHOUSE_URL
              schema: analytics
              statement_timeout: 600
    """

    url_env_var: str = Field(
        default="DATABASE_URL",
        description="Name of the environment variable that holds the PostgreSQL URL.",
    )
    schema_: str | None = Field(
        default=None,
        alias="schema",
        description=(
            "Schema for assets whose key has no prefix and whose metadata names none; a key "
            "prefix that differs from it is refused (see PostgresUpsertIOManager)."
        ),
    )
    statement_timeout: float | None = Field(
        default=None, description="Seconds any one statement may run; unset: no limit."
    )
    lock_timeout: float | None = Field(
        default=None, description="Seconds a statement may wait for a lock; unset: no limit."
    )
    resource_key: str = Field(default="postgres", description="Key of the PostgresResource.")
    io_manager_key: str = Field(default="io_manager", description="Key of the IO manager.")

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        """The two resources, bound to their keys."""
        postgres = PostgresResource(
            url=EnvVar(self.url_env_var),
            statement_timeout=self.statement_timeout,
            lock_timeout=self.lock_timeout,
        )
        return Definitions(
            resources={
                self.resource_key: postgres,
                self.io_manager_key: PostgresUpsertIOManager(
                    postgres=postgres, schema=self.schema_
                ),
            }
        )
