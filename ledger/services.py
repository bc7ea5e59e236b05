"""The only code that moves money. Every function here is one database transaction.

How a journal is written (same on PostgreSQL and SQLite):
1. insert the journal row with `ON CONFLICT (idempotency_key) DO NOTHING`: a replay, even a
   concurrent one, finds the first journal and posts nothing (it waits on the unique index
   until the first writer commits or rolls back);
2. lock the cached (per-user) accounts it touches with `SELECT ... FOR UPDATE` in ascending id
   order, so two opposite transfers can never deadlock, and check no balance goes below zero;
3. insert the postings with the running balance; a database trigger applies them to the
   cached balances (and re-checks the running balance), a CHECK constraint keeps non-negative
   accounts non-negative, and on PostgreSQL a deferred trigger rejects at commit any journal
   whose postings do not sum to zero.
On PostgreSQL steps 1-3 are one statement (`_POSTGRES_POST`: one round trip; outside a caller's
transaction it is its own transaction), the trigger fills the running balances under the lock
and the CHECK's refusal becomes InsufficientBalance. SQLite runs them one by one.
Hot system accounts (`cached=False`) are never locked or updated, so deposits to different
users run in parallel even though all of them debit the same node asset account.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from ledger.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidPosting,
    PendingTransferResolved,
    UnbalancedJournal,
)
from ledger.models import (
    Account,
    AccountCheckpoint,
    AccountKind,
    Journal,
    PendingTransfer,
    PendingTransferState,
    Posting,
    natural_sign,
)

if TYPE_CHECKING:
    from accounts.models import User

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Well-known system accounts (code -> kind). All are hot: summed from postings, never locked.
WITHDRAWALS_IN_FLIGHT = "withdrawals:in-flight"
INCOME_FEES = "income:fees"
EXPENSE_ROUTING_FEES = "expense:routing-fees"
EQUITY_ADJUSTMENTS = "equity:adjustments"
SYSTEM_ACCOUNT_KINDS: dict[str, str] = {
    WITHDRAWALS_IN_FLIGHT: AccountKind.LIABILITY,
    INCOME_FEES: AccountKind.INCOME,
    EXPENSE_ROUTING_FEES: AccountKind.EXPENSE,
    EQUITY_ADJUSTMENTS: AccountKind.EQUITY,
}

# PostgreSQL SQLSTATEs worth one more try: serialization failure and deadlock. With the fixed
# lock order neither should happen; the retry keeps an unforeseen one from reaching a caller.
_TRANSIENT_SQLSTATES = {"40001", "40P01"}
_MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a journal: `amount_msat` > 0 debits the account, < 0 credits it."""

    account: Account
    amount_msat: int


USER_ACCOUNT_PREFIX = "user:"


def user_account_code(user: User) -> str:
    return f"{USER_ACCOUNT_PREFIX}{user.uuid}"


def node_account_code(*, node_name: str, rail: str) -> str:
    """`rail` is "lightning" or "onchain": the node's two asset accounts."""
    return f"node:{node_name}:{rail}"


# --- accounts ------------------------------------------------------------------------------


def user_account_get_or_create(*, user: User) -> Account:
    account, _ = Account.objects.get_or_create(
        code=user_account_code(user),
        defaults={
            "name": f"Balance of {user.username}",
            "kind": AccountKind.LIABILITY,
            "owner": user,
            "allow_negative": False,
            "cached": True,
        },
    )
    return account


def system_account_get_or_create(*, code: str, kind: str | None = None, name: str = "") -> Account:
    """A hot system account (may go negative, balance summed from postings)."""
    resolved_kind = kind or SYSTEM_ACCOUNT_KINDS.get(code)
    if resolved_kind is None:
        raise InvalidPosting(f"unknown system account {code!r}: give its kind", code=code)
    account, created = Account.objects.get_or_create(
        code=code,
        defaults={
            "name": name or code,
            "kind": resolved_kind,
            "allow_negative": True,
            "cached": False,
        },
    )
    if not created and account.kind != resolved_kind:
        raise InvalidPosting(f"account {code} exists with kind {account.kind}", code=code)
    return account


def node_asset_account_get_or_create(*, node_name: str, rail: str = "lightning") -> Account:
    return system_account_get_or_create(
        code=node_account_code(node_name=node_name, rail=rail),
        kind=AccountKind.ASSET,
        name=f"Node {node_name} ({rail})",
    )


def user_accounts_lock(*, user_ids: Iterable[int]) -> None:
    """Lock these users' balance rows until the end of the caller's transaction, in the
    ledger's lock order (ascending account id), so a check can hold under the same lock the
    ledger takes to post, and a caller posting several journals in one transaction cannot
    lock the same users in another order and deadlock."""
    list(
        Account.objects.select_for_update()
        .filter(owner_id__in=set(user_ids), cached=True)
        .order_by("id")
        .values_list("id", flat=True)
    )


# --- transactions and retries --------------------------------------------------------------


def _is_transient(error: BaseException) -> bool:
    cause = error.__cause__
    return getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES


def _retry_transient(func: Callable[P, R]) -> Callable[P, R]:
    """Retry a whole service call on deadlock/serialization failure, but only when it owns
    its transaction (inside a caller's transaction the caller must decide)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            return func(*args, **kwargs)
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                return func(*args, **kwargs)
            except DatabaseError as error:
                if attempt == _MAX_ATTEMPTS or not _is_transient(error):
                    raise
                logger.warning("ledger: transient database error, retrying (attempt %d)", attempt)
                time.sleep(0.005 * attempt)
        raise AssertionError("unreachable")

    return wrapper


# --- journals ------------------------------------------------------------------------------


def _normalized_legs(legs: Sequence[Leg]) -> list[Leg]:
    if len(legs) < 2:
        raise UnbalancedJournal("a journal needs at least two postings")
    for leg in legs:
        if not isinstance(leg.amount_msat, int) or isinstance(leg.amount_msat, bool):
            raise InvalidPosting("amounts are integers in millisatoshi")
        if leg.amount_msat == 0:
            raise InvalidPosting("a posting cannot be zero")
        if leg.account.pk is None:
            raise InvalidPosting("posting to an unsaved account")
    total = sum(leg.amount_msat for leg in legs)
    if total != 0:
        raise UnbalancedJournal(f"postings sum to {total} msat, not zero", sum_msat=total)
    return list(legs)


def _insert_journal(
    *,
    idempotency_key: str,
    kind: str,
    memo: str,
    reference: tuple[str, str],
    created_by: User | None,
    reverses: Journal | None,
    created_at,
) -> int | None:
    """Insert the journal; None if the key already exists (a replay)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, "
            "reference_id, created_by_id, reverses_id, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            [
                idempotency_key,
                kind,
                memo,
                reference[0],
                str(reference[1]),
                created_by.pk if created_by else None,
                reverses.pk if reverses else None,
                connection.ops.adapt_datetimefield_value(created_at),
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _lock_cached_accounts(account_ids: set[int]) -> dict[int, tuple[int, int, bool, str]]:
    """Lock the per-user (cached) accounts among `account_ids` in ascending id order.
    Returns id -> (balance, natural sign, allow_negative, code)."""
    if not account_ids:
        return {}
    ids = sorted(account_ids)
    placeholders = ", ".join(["%s"] * len(ids))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, balance_msat, kind, allow_negative, code FROM ledger_account "
            f"WHERE cached = %s AND id IN ({placeholders}) ORDER BY id{lock}",
            [True, *ids],
        )
        return {
            row[0]: (row[1], natural_sign(row[2]), bool(row[3]), row[4])
            for row in cursor.fetchall()
        }


def _insert_postings(rows: list[tuple[int, int, int, int | None]]) -> None:
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params = [value for row in rows for value in row]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_posting (journal_id, account_id, amount_msat, balance_after_msat) "
            f"VALUES {values}",
            params,
        )


def _check_replay(journal: Journal, *, kind: str, legs: Sequence[Leg]) -> Journal:
    existing = Counter(journal.postings.values_list("account_id", "amount_msat"))
    requested = Counter((leg.account.pk, leg.amount_msat) for leg in legs)
    if journal.kind != kind or existing != requested:
        raise IdempotencyConflict(
            "this idempotency key was already used for a different movement",
            idempotency_key=journal.idempotency_key,
        )
    journal.replayed = True  # type: ignore[attr-defined]
    return journal


def _postings_with_running_balances(
    journal_id: int,
    legs: Sequence[Leg],
    locked: dict[int, tuple[int, int, bool, str]],
    running: dict[int, int],
) -> list[tuple[int, int, int, int | None]]:
    """Posting rows (journal, account, amount, running balance) for `legs`, applying each to
    `running` (the balances of the cached accounts in `locked`, updated in place). Raises
    InsufficientBalance, naming the account, at the first leg that would overdraw one."""
    rows: list[tuple[int, int, int, int | None]] = []
    for leg in legs:
        account_id = leg.account.pk
        if account_id not in locked:
            rows.append((journal_id, account_id, leg.amount_msat, None))
            continue
        _, sign, allow_negative, code = locked[account_id]
        before = running[account_id]
        after = before + sign * leg.amount_msat
        if after < 0 and not allow_negative:
            raise InsufficientBalance(
                "the balance is too low for this amount",
                account=code,
                balance_msat=before,
                required_msat=before - after,
            )
        running[account_id] = after
        rows.append((journal_id, account_id, leg.amount_msat, after))
    return rows


def _raise_insufficient(legs: Sequence[Leg], error: Exception) -> None:
    """The database refused a negative balance (CHECK `ledger_account_non_negative`, applied
    by the posting trigger under the account's row lock). Name the account for the caller:
    re-read the balances (after the rollback, so unlocked: informative only)."""
    accounts = {
        account_id: (balance, natural_sign(kind), allow_negative, code)
        for account_id, balance, kind, allow_negative, code in Account.objects.filter(
            pk__in={leg.account.pk for leg in legs}, cached=True
        ).values_list("pk", "balance_msat", "kind", "allow_negative", "code")
    }
    running = {account_id: state[0] for account_id, state in accounts.items()}
    try:
        _postings_with_running_balances(0, legs, accounts, running)
    except InsufficientBalance as named:
        raise named from error
    raise InsufficientBalance("the balance is too low for this amount") from error


# One statement, so one round trip (and, outside a caller's transaction, one implicit
# transaction): insert the journal (a replay inserts nothing and waits on the unique index
# for a concurrent first writer), lock the cached accounts in ascending id order (the
# InitPlan runs before the first posting is inserted), then insert the postings in leg
# order. The posting trigger applies each one to its cached balance under that lock and
# fills the running balance; the CHECK refuses a negative balance; the deferred triggers
# check the zero sum at commit.
# The accounts' locks and the postings of the journal in the CTE `j` (shared by the two
# statements below).
_POSTGRES_POSTINGS = """locked AS MATERIALIZED (
    SELECT a.id FROM ledger_account a
     WHERE a.cached AND a.id = ANY(%s::bigint[]) AND EXISTS (SELECT 1 FROM j)
     ORDER BY a.id
       FOR UPDATE
), inserted AS (
    INSERT INTO ledger_posting (journal_id, account_id, amount_msat)
    SELECT j.id, leg.account_id, leg.amount_msat
      FROM j, unnest(%s::bigint[], %s::bigint[]) WITH ORDINALITY
           AS leg(account_id, amount_msat, ord)
     WHERE (SELECT count(*) FROM locked) >= 0
     ORDER BY leg.ord
    RETURNING 1
)"""

_POSTGRES_POST = (
    """
WITH j AS (
    INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, reference_id,
                                created_by_id, reverses_id, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
), """
    + _POSTGRES_POSTINGS
    + """
SELECT (SELECT id FROM j), (SELECT count(*) FROM inserted)
"""
)

# transfer_claimed: the caller's claim (CLAIM: a data-modifying statement returning `id`), the
# caller's GUARDS (CTEs that read `claim`; the journal waits for the one named GUARD, so their
# row locks come before the accounts'), the journal only if the claim wrote a row (no ON
# CONFLICT: a repeated key fails the statement), its postings as above, then the caller's
# FOLLOW_UP, which may read `j`.
_POSTGRES_POST_CLAIMED = (
    """
WITH claim AS (CLAIM), GUARDS j AS (
    INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, reference_id,
                                created_by_id, reverses_id, created_at)
    SELECT %s, %s, %s, %s, claim.id::text, %s, NULL, %s FROM claim
     WHERE (SELECT count(*) FROM GUARD) >= 0
    RETURNING id
), """
    + _POSTGRES_POSTINGS
    + """, follow_up AS (FOLLOW_UP)
SELECT (SELECT id FROM claim), (SELECT id FROM j), (SELECT count(*) FROM inserted),
       (SELECT count(*) FROM follow_up)
"""
)


def _legs_params(legs: Sequence[Leg]) -> list:
    # Arrays as PostgreSQL array literals ('{1,2}', cast to bigint[] in the SQL): psycopg
    # scans a Python list to choose its dumper, ~4 µs a list on a fresh cursor, on every
    # payment; the values are ints, so the literal is exact.
    return [
        _bigint_array(sorted({leg.account.pk for leg in legs})),
        _bigint_array([leg.account.pk for leg in legs]),
        _bigint_array([leg.amount_msat for leg in legs]),
    ]


def _bigint_array(values: Sequence[int]) -> str:
    return "{" + ",".join(str(int(value)) for value in values) + "}"


def _post_postgresql(*, legs: Sequence[Leg], **journal_fields) -> int | None:
    """PostgreSQL: the journal in one statement. Returns its id, or None for a replay."""
    params = [
        journal_fields["idempotency_key"],
        journal_fields["kind"],
        journal_fields["memo"],
        journal_fields["reference"][0],
        str(journal_fields["reference"][1]),
        journal_fields["created_by"].pk if journal_fields["created_by"] else None,
        journal_fields["reverses"].pk if journal_fields["reverses"] else None,
        journal_fields["created_at"],
        *_legs_params(legs),
    ]
    journal_id, inserted = _run_postgres_journal(_POSTGRES_POST, params, legs)
    if journal_id is not None:
        _check_postings_written(journal_id, inserted, legs)
    return journal_id


def _run_postgres_journal(sql: str, params: list, legs: Sequence[Leg]) -> tuple:
    """Run one statement that posts a journal and return its row: under a savepoint inside
    the caller's transaction, else as its own transaction. The database's refusal of an
    overdraft becomes InsufficientBalance naming the account."""

    def execute() -> tuple:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    try:
        if connection.in_atomic_block or not connection.get_autocommit():
            with transaction.atomic():  # a savepoint inside the caller's transaction
                return execute()
        return execute()  # autocommit: the statement is the transaction
    except IntegrityError as error:
        if "non_negative" in str(error):
            _raise_insufficient(legs, error)
        raise


def _check_postings_written(journal_id: int, inserted: int, legs: Sequence[Leg]) -> None:
    if inserted != len(legs):  # pragma: no cover - defensive
        raise AssertionError(f"journal {journal_id}: {inserted} of {len(legs)} postings written")


def _post_portable(
    *,
    legs: Sequence[Leg],
    idempotency_key: str,
    kind: str,
    memo: str,
    reference: tuple[str, str],
    created_by: User | None,
    reverses: Journal | None,
    created_at,
) -> int | None:
    """SQLite (one writer at a time): the same steps as separate statements in one
    transaction. Returns the journal id, or None for a replay."""
    with transaction.atomic():
        journal_id = _insert_journal(
            idempotency_key=idempotency_key,
            kind=kind,
            memo=memo,
            reference=reference,
            created_by=created_by,
            reverses=reverses,
            created_at=created_at,
        )
        if journal_id is None:
            return None

        locked = _lock_cached_accounts({leg.account.pk for leg in legs})
        running = {account_id: state[0] for account_id, state in locked.items()}
        rows = _postings_with_running_balances(journal_id, legs, locked, running)
        try:
            _insert_postings(rows)
        except IntegrityError as error:
            # Backstop: the CHECK on ledger_account refused a negative balance.
            if "non_negative" in str(error):
                raise InsufficientBalance("the balance is too low for this amount") from error
            raise
    return journal_id


def _post_journal_in_transaction(
    *,
    idempotency_key: str,
    kind: str,
    legs: Sequence[Leg],
    memo: str = "",
    reference: tuple[str, str] = ("", ""),
    created_by: User | None = None,
    reverses: Journal | None = None,
) -> Journal:
    legs = _normalized_legs(legs)
    _require_key(idempotency_key)
    now = timezone.now()
    journal_fields = {
        "idempotency_key": idempotency_key,
        "kind": kind,
        "memo": memo,
        "reference": reference,
        "created_by": created_by,
        "reverses": reverses,
        "created_at": now,
    }
    if connection.vendor == "postgresql":
        journal_id = _post_postgresql(legs=legs, **journal_fields)
    else:
        journal_id = _post_portable(legs=legs, **journal_fields)
    if journal_id is None:
        return _check_replay(
            Journal.objects.get(idempotency_key=idempotency_key), kind=kind, legs=legs
        )

    journal = Journal(
        id=journal_id,
        idempotency_key=idempotency_key,
        kind=kind,
        memo=memo,
        reference_type=reference[0],
        reference_id=str(reference[1]),
        created_by=created_by,
        reverses=reverses,
        created_at=now,
    )
    journal.replayed = False  # type: ignore[attr-defined]
    return journal


@_retry_transient
def journal_post(
    *,
    idempotency_key: str,
    kind: str,
    legs: Sequence[Leg],
    memo: str = "",
    reference: tuple[str, str] = ("", ""),
    created_by: User | None = None,
) -> Journal:
    """Post a balanced journal. The same key returns the first journal and posts nothing
    (its `replayed` attribute is True); the same key with other postings raises
    IdempotencyConflict."""
    return _post_journal_in_transaction(
        idempotency_key=idempotency_key,
        kind=kind,
        legs=legs,
        memo=memo,
        reference=reference,
        created_by=created_by,
    )


def transfer(
    *,
    idempotency_key: str,
    kind: str,
    debit: Account,
    credit: Account,
    amount_msat: int,
    memo: str = "",
    reference: tuple[str, str] = ("", ""),
    created_by: User | None = None,
) -> Journal:
    """Move `amount_msat` (> 0) by debiting one account and crediting another (TigerBeetle's
    transfer). A deposit debits the node asset and credits the user; a payment from A to B
    debits A and credits B."""
    return journal_post(
        idempotency_key=idempotency_key,
        kind=kind,
        legs=_transfer_legs(debit=debit, credit=credit, amount_msat=amount_msat),
        memo=memo,
        reference=reference,
        created_by=created_by,
    )


def transfer_claimed(
    *,
    claim_sql: str,
    claim_params: Sequence,
    follow_up_sql: str,
    follow_up_params: Sequence,
    idempotency_key: str,
    kind: str,
    debit: Account,
    credit: Account,
    amount_msat: int,
    memo: str,
    reference_type: str,
    created_by: User | None,
    guards: tuple[str, Sequence, str] | None = None,
) -> tuple[int, int] | None:
    """PostgreSQL only: a transfer that exists only if the caller's claim writes its row, in
    ONE statement with that claim and the caller's follow-up: one round trip and, outside a
    caller's transaction, its own transaction (no BEGIN/COMMIT). `claim_sql` is a
    data-modifying statement returning one column `id`, the journal's reference id; when it
    returns no row nothing at all is written and this returns None. `guards`, if given, is
    (CTEs, their parameters, the name of the one the journal waits for): more writes that
    read `claim`, made before the accounts are locked, and that may fail the whole statement
    (a CHECK). `follow_up_sql` runs once the journal exists and may read its id from the CTE
    `j` (`... journal_id = j.id FROM j`). There is no replay: a journal with this key already
    makes the statement fail whole (the claim is what makes it happen once). Returns (the
    claim's id, the journal's id)."""
    legs = _normalized_legs(_transfer_legs(debit=debit, credit=credit, amount_msat=amount_msat))
    _require_key(idempotency_key)
    if connection.vendor != "postgresql":
        raise InvalidPosting("transfer_claimed is for PostgreSQL; use a transaction elsewhere")
    guard_ctes, guard_params, guard_name = guards or ("", (), "claim")
    # The template's own markers first, then the callers' SQL (which could contain them).
    sql = (
        _POSTGRES_POST_CLAIMED.replace("GUARD)", f"{guard_name})", 1)
        .replace("FOLLOW_UP", follow_up_sql, 1)
        .replace("GUARDS", f"{guard_ctes}, " if guard_ctes else "", 1)
        .replace("CLAIM", claim_sql, 1)
    )
    params = [
        *claim_params,
        *guard_params,
        idempotency_key,
        kind,
        memo,
        reference_type,
        created_by.pk if created_by else None,
        timezone.now(),
        *_legs_params(legs),
        *follow_up_params,
    ]
    claim_id, journal_id, inserted, _ = _run_postgres_journal(sql, params, legs)
    if claim_id is None:
        return None
    _check_postings_written(journal_id, inserted, legs)
    return claim_id, journal_id


def _transfer_legs(*, debit: Account, credit: Account, amount_msat: int) -> list[Leg]:
    """A transfer's two legs, checked: a positive amount between two different accounts."""
    _require_positive(amount_msat)
    if debit.pk == credit.pk:
        raise InvalidPosting("debit and credit accounts must differ")
    return [Leg(debit, amount_msat), Leg(credit, -amount_msat)]


def _require_key(idempotency_key: str) -> None:
    if not idempotency_key or len(idempotency_key) > 200:
        raise InvalidPosting("idempotency key must be 1 to 200 characters")


def _require_positive(amount_msat: int) -> None:
    if not isinstance(amount_msat, int) or isinstance(amount_msat, bool) or amount_msat <= 0:
        raise InvalidPosting("amount must be a positive integer of millisatoshi")


@_retry_transient
def journal_reverse(
    *,
    journal: Journal,
    memo: str = "",
    created_by: User | None = None,
    idempotency_key: str | None = None,
) -> Journal:
    """Post the mirror image of `journal` (each posting negated). A journal is reversed at
    most once; a reversal that would overdraw an account is refused."""
    if (
        PendingTransfer.objects.filter(reserve_journal=journal).exists()
        or PendingTransfer.objects.filter(resolve_journal=journal).exists()
    ):
        raise InvalidPosting("journals of a two-phase transfer are resolved by post or void")
    key = idempotency_key or f"reversal:{journal.pk}"
    existing = Journal.objects.filter(reverses=journal).first()
    if existing is not None and existing.idempotency_key != key:
        raise AlreadyReversed(
            "this journal was already reversed", reversal=existing.idempotency_key
        )
    legs = [
        Leg(posting.account, -posting.amount_msat)
        for posting in journal.postings.select_related("account")
    ]
    try:
        return _post_journal_in_transaction(
            idempotency_key=key,
            kind="reversal",
            legs=legs,
            memo=memo or f"reversal of {journal.idempotency_key}",
            reference=("ledger.journal", str(journal.pk)),
            created_by=created_by,
            reverses=journal,
        )
    except IntegrityError as error:
        if "reverses" in str(error):
            raise AlreadyReversed("this journal was already reversed") from error
        raise


# --- two-phase transfers -------------------------------------------------------------------


@_retry_transient
def pending_transfer_reserve(
    *,
    key: str,
    kind: str,
    debit: Account,
    holding: Account,
    amount_msat: int,
    memo: str = "",
    reference: tuple[str, str] = ("", ""),
    created_by: User | None = None,
) -> PendingTransfer:
    """Phase one: move `amount_msat` from `debit` into the `holding` account (e.g. a user's
    balance into withdrawals:in-flight). Idempotent on `key`."""
    _require_positive(amount_msat)
    with transaction.atomic():
        journal = _post_journal_in_transaction(
            idempotency_key=key,
            kind=kind,
            legs=[Leg(debit, amount_msat), Leg(holding, -amount_msat)],
            memo=memo,
            reference=reference,
            created_by=created_by,
        )
        if journal.replayed:  # type: ignore[attr-defined]
            return PendingTransfer.objects.get(key=key)
        return PendingTransfer.objects.create(
            key=key,
            debit_account=debit,
            credit_account=holding,
            amount_msat=amount_msat,
            reserve_journal=journal,
        )


def _locked_pending(key: str) -> PendingTransfer:
    # Lock the pending row only: FOR UPDATE over the join would also lock the shared holding
    # account (withdrawals:in-flight) and serialize every post and void on it.
    return (
        PendingTransfer.objects.select_for_update(of=("self",))
        .select_related("debit_account", "credit_account")
        .get(key=key)
    )


def _check_destination_amounts(destinations: Sequence[tuple[Account, int]]) -> None:
    for _, amount in destinations:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidPosting("destination amounts are non-negative integers of msat")


def _posting_legs(
    pending: PendingTransfer, destinations: Sequence[tuple[Account, int]]
) -> list[Leg]:
    """The legs that post `pending`: the holding account gives up the whole reservation, each
    destination gets its amount, the origin gets back what is left. Refused for a voided
    transfer or destinations over the reservation."""
    if pending.state == PendingTransferState.VOIDED:
        raise PendingTransferResolved("this transfer was already voided", key=pending.key)
    total = sum(amount for _, amount in destinations)
    if total > pending.amount_msat:
        raise InvalidPosting(
            "destinations exceed the reserved amount",
            key=pending.key,
            reserved_msat=pending.amount_msat,
            requested_msat=total,
        )
    legs = [Leg(pending.credit_account, pending.amount_msat)]
    legs += [Leg(account, -amount) for account, amount in destinations if amount > 0]
    if pending.amount_msat - total > 0:
        legs.append(Leg(pending.debit_account, -(pending.amount_msat - total)))
    return legs


@_retry_transient
def pending_transfer_post(
    *,
    key: str,
    kind: str,
    destinations: Sequence[tuple[Account, int]],
    memo: str = "",
    created_by: User | None = None,
) -> PendingTransfer:
    """Phase two, success: credit each destination from the holding account and return the
    unused rest of the reservation to the origin, in one journal. Idempotent; refused if the
    transfer was voided."""
    _check_destination_amounts(destinations)
    with transaction.atomic():
        pending = _locked_pending(key)
        legs = _posting_legs(pending, destinations)
        journal = _post_journal_in_transaction(
            idempotency_key=f"{key}:post",
            kind=kind,
            legs=legs,
            memo=memo,
            reference=("ledger.pendingtransfer", str(pending.pk)),
            created_by=created_by,
        )
        if pending.state == PendingTransferState.PENDING:
            pending.state = PendingTransferState.POSTED
            pending.resolve_journal = journal
            pending.resolved_at = timezone.now()
            pending.save(update_fields=["state", "resolve_journal", "resolved_at"])
        return pending


@_retry_transient
def pending_transfer_void(
    *, key: str, kind: str, memo: str = "", created_by: User | None = None
) -> PendingTransfer:
    """Phase two, failure: return the whole reservation to the origin. Idempotent; refused
    if the transfer was posted."""
    with transaction.atomic():
        pending = _locked_pending(key)
        if pending.state == PendingTransferState.POSTED:
            raise PendingTransferResolved("this transfer was already posted", key=key)
        journal = _post_journal_in_transaction(
            idempotency_key=f"{key}:void",
            kind=kind,
            legs=[
                Leg(pending.credit_account, pending.amount_msat),
                Leg(pending.debit_account, -pending.amount_msat),
            ],
            memo=memo,
            reference=("ledger.pendingtransfer", str(pending.pk)),
            created_by=created_by,
        )
        if pending.state == PendingTransferState.PENDING:
            pending.state = PendingTransferState.VOIDED
            pending.resolve_journal = journal
            pending.resolved_at = timezone.now()
            pending.save(update_fields=["state", "resolve_journal", "resolved_at"])
        return pending


@dataclass(frozen=True, slots=True)
class PendingPost:
    """One pending transfer to post in `pending_transfers_post_many`."""

    key: str
    destinations: Sequence[tuple[Account, int]]
    memo: str = ""


def _insert_journals(
    rows: list[tuple[str, str, str, str, str]], *, created_by: User | None, created_at
) -> dict[str, int]:
    """Insert journals (key, kind, memo, reference type, reference id) in one statement;
    key -> id of those inserted (keys that already existed are replays, left out)."""
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, NULL, %s)"] * len(rows))
    created = connection.ops.adapt_datetimefield_value(created_at)
    creator = created_by.pk if created_by else None
    params = [v for row in rows for v in (*row, creator, created)]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_journal (idempotency_key, kind, memo, reference_type, "
            "reference_id, created_by_id, reverses_id, created_at) "
            f"VALUES {values} ON CONFLICT (idempotency_key) DO NOTHING "
            "RETURNING id, idempotency_key",
            params,
        )
        return {key: journal_id for journal_id, key in cursor.fetchall()}


@_retry_transient
def pending_transfers_post_many(
    *, posts: Sequence[PendingPost], kind: str, created_by: User | None = None
) -> int:
    """`pending_transfer_post` for many transfers at once (a batch job settling hundreds of
    withdrawals), in one transaction and a constant number of statements whatever their
    count: the same journals (`<key>:post`), the same checks, the same idempotency (an
    already posted transfer is a replay and posts nothing; a voided one is refused). Locks:
    the pending rows, then the cached accounts in ascending id order, as everywhere else.
    Returns how many were posted now (replays not counted)."""
    if not posts:
        return 0
    if len({post.key for post in posts}) != len(posts):
        raise InvalidPosting("the same pending transfer is given twice")
    for post in posts:
        _check_destination_amounts(post.destinations)
    now = timezone.now()
    with transaction.atomic():
        pending = {
            row.key: row
            for row in PendingTransfer.objects.select_for_update(of=("self",))
            .select_related("debit_account", "credit_account")
            .filter(key__in=[post.key for post in posts])
            .order_by("id")
        }
        planned: list[tuple[PendingPost, PendingTransfer, list[Leg]]] = []
        for post in posts:
            transfer_row = pending.get(post.key)
            if transfer_row is None:
                raise PendingTransfer.DoesNotExist(f"no pending transfer {post.key}")
            legs = _posting_legs(transfer_row, post.destinations)
            planned.append((post, transfer_row, _normalized_legs(legs)))

        inserted = _insert_journals(
            [
                (
                    f"{post.key}:post",
                    kind,
                    post.memo,
                    "ledger.pendingtransfer",
                    str(row.pk),
                )
                for post, row, _ in planned
            ],
            created_by=created_by,
            created_at=now,
        )
        for post, _, legs in planned:
            if f"{post.key}:post" not in inserted:  # replay: must be the same movement
                _check_replay(
                    Journal.objects.get(idempotency_key=f"{post.key}:post"), kind=kind, legs=legs
                )

        fresh = [(post, row, legs) for post, row, legs in planned if f"{post.key}:post" in inserted]
        locked = _lock_cached_accounts({leg.account.pk for _, _, legs in fresh for leg in legs})
        running = {account_id: state[0] for account_id, state in locked.items()}
        postings: list[tuple[int, int, int, int | None]] = []
        for post, _, legs in fresh:
            journal_id = inserted[f"{post.key}:post"]
            postings += _postings_with_running_balances(journal_id, legs, locked, running)
        for start in range(0, len(postings), 2000):  # bound the statement's parameters
            _insert_postings(postings[start : start + 2000])

        # Resolve the still-pending ones in one statement: each points at its `<key>:post`
        # journal (inserted now, or by an earlier call if the state update was lost).
        open_ids = [row.pk for _, row, _ in planned if row.state == PendingTransferState.PENDING]
        for start in range(0, len(open_ids), 5000):
            ids = open_ids[start : start + 5000]
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE ledger_pendingtransfer SET state = %s, resolved_at = %s, "
                    "resolve_journal_id = (SELECT j.id FROM ledger_journal j "
                    "WHERE j.idempotency_key = ledger_pendingtransfer.key || ':post') "
                    f"WHERE state = %s AND id IN ({', '.join(['%s'] * len(ids))})",
                    [
                        PendingTransferState.POSTED,
                        connection.ops.adapt_datetimefield_value(now),
                        PendingTransferState.PENDING,
                        *ids,
                    ],
                )
        return len(fresh)


# --- checkpoints of hot accounts -----------------------------------------------------------


def _stable_posting_horizon() -> int:
    """The highest posting id below which no posting can still appear. On PostgreSQL a
    brief SHARE lock waits for in-flight writers (ids are taken under the insert's lock, so
    every later posting gets a higher id); SQLite has one writer at a time anyway."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("LOCK TABLE ledger_posting IN SHARE MODE")
        return Posting.objects.aggregate(top=Max("id"))["top"] or 0


def hot_account_checkpoint() -> int:
    """Move every hot account's checkpoint forward to the stable horizon. Returns how many
    checkpoints changed. Run by a scheduled job; safe to run concurrently (row locks)."""
    horizon = _stable_posting_horizon()
    changed = 0
    for account in Account.objects.filter(cached=False).only("id", "kind"):
        with transaction.atomic():
            checkpoint, _ = AccountCheckpoint.objects.select_for_update().get_or_create(
                account=account, defaults={"through_posting_id": 0, "balance_msat": 0}
            )
            if checkpoint.through_posting_id >= horizon:
                continue
            delta = Posting.objects.filter(
                account=account, id__gt=checkpoint.through_posting_id, id__lte=horizon
            ).aggregate(total=Sum("amount_msat", default=0))["total"]
            checkpoint.balance_msat += natural_sign(account.kind) * delta
            checkpoint.through_posting_id = horizon
            checkpoint.save(update_fields=["balance_msat", "through_posting_id", "updated_at"])
            changed += 1
    return changed
