"""GraphQL resolvers: node objects whose attributes and methods graphql-core's default resolver
calls (`obj.field(info, **args)`), over the Store. Missing objects resolve to null, as in W&B.

One module per part of the schema: `queries` and `mutations` (the root), `projects`, `runs`,
`history` (a run's history fields), `files`, `artifacts`; `base` holds what they share.
"""

from __future__ import annotations

from .mutations import Mutations
from .queries import Queries


class Root(Queries, Mutations):
    """Query and mutation root."""


__all__ = ["Root"]
