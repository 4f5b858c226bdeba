"""The compiled core's memory layout: which row of which bundle array holds what (plain integers, no numba).

The core keeps its state in a few 2-D integer arrays, one per kind of thing, indexed ``bundle[FIELD, index]``
(each field a contiguous row), so its entry points take a handful of bundles instead of one argument per
array. A cached prompt (an *entry*) lives in a recycled *slot*; its units are *items* ``slot * nk + kidx``
(eviction unit noise) or the slot itself (unit prompt). Each slot is on two lists ordered by entry id: its
(partition, prompt) list, whose head answers lookups (several entries of one prompt: the oldest), and its
partition's list, which the exact fallback scans. With rows (candidate lists, which can fall back), every
cached prompt's vector sits in a *row* of a contiguous matrix, one per distinct cached prompt (shared by its
entries in every partition, reference-counted, recycled), so a fallback's cosines are one pass over the rows.
"""

# scal[]: scalar state (kept in an array so that a replay can stop for an exact fallback and resume)
# (ROW_TOP: free rows on the row_free stack; ROW_HIGH: rows [0, ROW_HIGH) were ever written; WRITES: rows written
# so far, the stamp of each row's last write, which tells a fallback screen which rows changed since it ran;
# AGE: LCBFU-DA's L; LISTED: lookups a candidate list answered, as the reference's retriever counts them)
(USED_NOISES, USED_BYTES, NEXT_ENTRY, SEQ, HEAP_SIZE, FREE_TOP, ROW_TOP, ROW_HIGH, WRITES, AGE, LISTED,
 NUM_SCALARS) = range(12)

# conf[]: the run's constants
# (INIT_USES: LCBFU's use count of a new noise, policy_params.lcbfu_initial_uses)
POLICY, BY_PROMPT, CAP_NOISES, CAP_BYTES, WITH_ROWS, INIT_USES, NUM_CONF = range(7)

# slot[FIELD, slot]
(S_ENTRY, S_MASK, S_PP, S_PART, S_BYTES, S_PP_NEXT, S_PP_PREV, S_PART_NEXT, S_PART_PREV, S_ROW,
 NUM_SLOT_FIELDS) = range(11)
# pp[FIELD, (partition, prompt) code]
PP_HEAD, PP_TAIL, NUM_PP_FIELDS = range(3)
# part[FIELD, partition]; P_SCOPE: the partition's search scope, P_SCOPE_COUNT[scope]: cached prompts of scope
# ``scope`` (a scope code is below the number of partitions, so the row fits)
P_HEAD, P_TAIL, P_COUNT, P_SCOPE, P_SCOPE_COUNT, NUM_PART_FIELDS = range(6)
# item[FIELD, item]: a circular doubly linked list (sentinel: the last column) and the policies' per-item state
I_NEXT, I_PREV, I_POS, I_USES, I_SEQ, NUM_ITEM_FIELDS = range(6)
# heap[FIELD, position]: the item at each heap position and its integer keys (key b, a float, in heap_b)
H_ITEM, H_A, H_C, H_D, NUM_HEAP_FIELDS = range(5)
# row[FIELD, row]
R_PROMPT, R_REFS, R_STAMP, NUM_ROW_FIELDS = range(4)
# req[FIELD, request]
Q_PART, Q_PP, Q_BYTES, Q_MAX_K, NUM_REQ_FIELDS = range(5)
# cand[FIELD, candidate] (integers) and cand_f[FIELD, candidate] (floats)
C_PP, C_K, NUM_CAND_FIELDS = range(3)
CF_RAW, CF_MAPPED, NUM_CANDF_FIELDS = range(3)

# lookup status
DONE, NEEDS_FALLBACK = range(2)
