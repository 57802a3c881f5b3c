"""Purges: preview (a dry run with exact counts) → confirm (retyped target + reason,
audited) → execute (re-checked, paged, rate-capped, checkpointed, resumable, audited).

Every step is one loop over the keyspace's nodes (`keyspace.nodes.primaries`: one for a
standalone server, each primary of a Redis Cluster), running the same code per node.

- `targets`: what may be purged, decided once, before any Redis command, and stored on the
  run (`decide_target`); the keyspace guardrail (`check_keyspace`);
- `estimate`: the instant estimate of a target (a fresh review's counts, else DBSIZE);
- `preview`: the dry run, on the worker (`request_preview` → `run_preview`) or here
  (`preview_purge`), saved as a `previewed` run; `estimate_purge` skips it (`purge --yes`);
- `findings`: the offending keys of a review finding, found again and stored per node;
- `lifecycle`: confirm and cancel;
- `execute`: the one execution loop, claims on `PurgeRun`, resume from the per-node markers;
- `dispatch`: handing runs to the worker; a broker's refusal fails the run that never
  started, and a run no worker took can be sent again (`retry_purge`);
- `policy`: the scheduled policy purge and the clean-up of unconfirmed previews.

The modules import only each other's public names, in one direction
(common ← targets ← findings ← estimate ← preview ← execute ← policy; lifecycle uses targets;
dispatch uses lifecycle, preview and execute).
"""

from continuity.operations.purge.common import (SAMPLE_SIZE, Pacer, PurgeRefused, PurgeStopped,  # noqa: F401
                                               describe_failure)
from continuity.operations.purge.dispatch import enqueue_preview, enqueue_purge, retry_purge  # noqa: F401
from continuity.operations.purge.execute import abandon_purge, execute_purge, fail_purge, stalled_purges  # noqa: F401
from continuity.operations.purge.lifecycle import (  # noqa: F401
    PURGE_TASK,
    blocking_run,
    cancel_purge,
    confirm_purge,
    describe_blocking,
    is_stalled,
    resume_purge,
)
from continuity.operations.purge.policy import clean_up_previews, policy_purge  # noqa: F401
from continuity.operations.purge.preview import (  # noqa: F401
    PREVIEW_TASK,
    estimate_purge,
    fail_preview,
    new_run,
    preview_purge,
    request_preview,
    run_preview,
)
from continuity.operations.purge.targets import (  # noqa: F401
    SECRET_TARGET,
    default_action,
    literal_head,
    resolve_target,
    review_counts,
    scope_of,
)
