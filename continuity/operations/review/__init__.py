"""The TTL review: stream a database's whole keyspace with SCAN, node by node, classify
every key by the longest registered namespace prefix, and count what breaks the
namespace's policy.

- `tally`: the aggregates, the classifier and the hot loop (`count_batch`);
- `parts`: one node's part of a review, the loop every node runs (`review_node`);
- `run`: the run: its parts (`prepare`), their merge and its end (`finish`).

Cost: what Redis executes is counted (`billed_commands`, each call inside a script
included): per batch one SCAN and one script call, per key PTTL, plus TYPE where a
namespace expects a type and MEMORY USAGE where one has a size limit (always on
self-hosted Redis). With the seeded policies on Upstash that is ~1.96 billed commands per
key; see `parts.plan` and docs/benchmarks.md. A sampled review reads ~2,000 keys whatever
the keyspace.

Speed: Redis's time inside the script (~5.7 µs per key, measured) is the floor. The
stream sends the next batch's request before this process counts the current one, so
the counting (~1 µs per key: the flat reply used as it is, two dict lookups to classify,
no object per key) runs while Redis works. See docs/benchmarks.md.

Exactness and duplicates: SCAN guarantees that every key present for the whole scan is
returned at least once, and it returns a key twice only when the hash table *shrinks*
between two calls. A table only shrinks after keys are deleted or expire, that is, when the
keyspace changes. So on a static keyspace each key comes back exactly once and the counts
are exact, without keeping a set of seen keys. When the keyspace does change, the run
records DBSIZE before and after and the pages flag the counts as a best effort.

Resume: every `checkpoint_every` batches a part writes its cursor and Tally to its row in
one UPDATE, guarded by its claim. A worker that dies loses at most the batches since that
checkpoint; the next worker reloads the Tally and continues from the saved cursor, so no
key is counted twice.
"""

from continuity.operations.review.parts import NodeInterrupted, plan, review_node  # noqa: F401
from continuity.operations.review.run import (  # noqa: F401
    ReviewBusy,
    ReviewInterrupted,
    allocate,
    REVIEW_NODE_TASK,
    FINISH_TASK,
    fan_out,
    finish,
    open_run,
    prepare,
    result_from_run,
    review_database,
    stale_parts,
    start_review,
)
from continuity.operations.review.tally import (  # noqa: F401
    HEAD_MEMO_CAP,
    NO_NAMESPACE,
    SAMPLE_CAP,
    TOP_N,
    Classifier,
    Tally,
    count_batch,
    merge,
)
