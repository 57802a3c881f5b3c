"""Purges: preview (a dry run with exact counts) → confirm (retyped target + reason,
audited) → execute (re-checked, batched, rate-capped, checkpointed, resumable, audited).

- `targets`: what may be purged, decided before any Redis command;
- `preview`: the dry run, saved as a `previewed` run;
- `findings`: the offending keys of a review finding, found again and stored in order;
- `lifecycle`: confirm and cancel;
- `execute`: the one execution loop, claims on `PurgeRun`, resume from the marker;
- `policy`: the scheduled policy purge and the clean-up of unconfirmed previews.

The modules import only each other's public names, in one direction
(common ← targets ← findings ← preview ← execute ← policy; lifecycle uses targets).
"""

from continuity.operations.purge.common import (  # noqa: F401
    SAMPLE_SIZE,
    PolicyPurgeResult,
    PurgePreview,
    PurgeRefused,
    PurgeResult,
    PurgeStopped,
)
from continuity.operations.purge.execute import Pacer, execute_purge, fail_purge, stalled_purges  # noqa: F401
from continuity.operations.purge.lifecycle import cancel_purge, confirm_purge  # noqa: F401
from continuity.operations.purge.policy import clean_up_previews, policy_purge  # noqa: F401
from continuity.operations.purge.preview import preview_purge  # noqa: F401
from continuity.operations.purge.targets import literal_head, phrase, resolve_target, review_counts  # noqa: F401
