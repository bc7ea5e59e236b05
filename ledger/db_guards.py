"""Database-level guards of the ledger's invariants, so that even raw SQL cannot break them.

PostgreSQL:
- a BEFORE INSERT trigger on postings applies each posting to its account's cached balance
  (and fills/checks the running balance); the CHECK `ledger_account_non_negative` then refuses
  any balance below zero on a non-negative account;
- deferred constraint triggers reject, at commit, a journal whose postings do not sum to zero
  or that has fewer than two postings;
- journals and postings refuse UPDATE and DELETE; an account starts at zero with a valid kind,
  and its balance, kind and cached flag can change only through a posting (a direct UPDATE of
  them is refused).
SQLite (no deferred triggers): the same append-only, running-balance, balance-applying,
starts-at-zero and valid-kind triggers; the zero-sum rule is the service's.

TRUNCATE is left to privileges: the service's role needs none (Django's test flush uses it).
"""

from ledger.models import AccountKind

# An account's kind is checked once, on insert (it cannot change afterwards; see the account
# guard), not by a CHECK: PostgreSQL re-reads a CHECK's stored expression on every statement
# that writes the table, i.e. on each of the two balance updates of every payment
# (bench/RESULTS.md, session 7). A new kind needs a migration that reinstalls the guards.
_KINDS = ", ".join(f"'{kind.value}'" for kind in AccountKind)

_NATURAL_DELTA = (
    "CASE WHEN kind IN ('asset', 'expense') THEN NEW.amount_msat ELSE -NEW.amount_msat END"
)

POSTGRES_INSTALL = f"""
CREATE OR REPLACE FUNCTION ledger_posting_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE new_balance bigint;
BEGIN
    UPDATE ledger_account SET balance_msat = balance_msat + {_NATURAL_DELTA}
     WHERE id = NEW.account_id AND cached
    RETURNING balance_msat INTO new_balance;
    IF FOUND THEN
        IF NEW.balance_after_msat IS NULL THEN
            NEW.balance_after_msat := new_balance;
        ELSIF NEW.balance_after_msat <> new_balance THEN
            RAISE EXCEPTION 'ledger: running balance % does not match account balance %',
                NEW.balance_after_msat, new_balance USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.balance_after_msat IS NOT NULL THEN
        RAISE EXCEPTION 'ledger: running balances are kept only for cached accounts'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_posting_apply BEFORE INSERT ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_apply();

CREATE OR REPLACE FUNCTION ledger_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE journal bigint; total numeric; legs bigint;
BEGIN
    IF TG_TABLE_NAME = 'ledger_journal' THEN journal := NEW.id; ELSE journal := NEW.journal_id; END IF;
    SELECT COALESCE(SUM(amount_msat), 0), COUNT(*) INTO total, legs
      FROM ledger_posting WHERE journal_id = journal;
    IF total <> 0 THEN
        RAISE EXCEPTION 'ledger: journal % postings sum to % msat, not zero', journal, total
            USING ERRCODE = 'check_violation';
    END IF;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger: journal % has % postings; at least two are needed', journal, legs
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_posting
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_journal_balanced();
CREATE CONSTRAINT TRIGGER ledger_journal_balanced AFTER INSERT ON ledger_journal
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_journal_balanced();

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: % is append-only; post a reversing journal instead', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END $$;

CREATE TRIGGER ledger_posting_append_only BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_journal_append_only BEFORE UPDATE OR DELETE ON ledger_journal
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE OR REPLACE FUNCTION ledger_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.kind NOT IN ({_KINDS}) THEN
            RAISE EXCEPTION 'ledger: % is not an account kind', NEW.kind
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.balance_msat <> 0 THEN
            RAISE EXCEPTION 'ledger: an account starts at zero; money arrives by journal'
                USING ERRCODE = 'restrict_violation';
        END IF;
    ELSIF pg_trigger_depth() < 2 AND (NEW.balance_msat <> OLD.balance_msat
            OR NEW.kind <> OLD.kind OR NEW.cached <> OLD.cached) THEN
        RAISE EXCEPTION 'ledger: balance, kind and cached change only through postings'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER ledger_account_guard BEFORE INSERT OR UPDATE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_account_guard();
"""

POSTGRES_UNINSTALL = """
DROP TRIGGER IF EXISTS ledger_account_guard ON ledger_account;
DROP TRIGGER IF EXISTS ledger_journal_append_only ON ledger_journal;
DROP TRIGGER IF EXISTS ledger_posting_append_only ON ledger_posting;
DROP TRIGGER IF EXISTS ledger_journal_balanced ON ledger_journal;
DROP TRIGGER IF EXISTS ledger_posting_balanced ON ledger_posting;
DROP TRIGGER IF EXISTS ledger_posting_apply ON ledger_posting;
DROP FUNCTION IF EXISTS ledger_account_guard();
DROP FUNCTION IF EXISTS ledger_refuse_change();
DROP FUNCTION IF EXISTS ledger_journal_balanced();
DROP FUNCTION IF EXISTS ledger_posting_apply();
"""

_SQLITE_NEXT_BALANCE = (
    f"(SELECT balance_msat + {_NATURAL_DELTA} FROM ledger_account WHERE id = NEW.account_id)"
)
_SQLITE_IS_CACHED = "(SELECT cached FROM ledger_account WHERE id = NEW.account_id)"

SQLITE_INSTALL = [
    *(
        f"CREATE TRIGGER ledger_{table}_no_{op.lower()} BEFORE {op} ON ledger_{table} BEGIN "
        f"SELECT RAISE(ABORT, 'ledger: ledger_{table} is append-only; post a reversing journal "
        "instead'); END"
        for table in ("posting", "journal")
        for op in ("UPDATE", "DELETE")
    ),
    "CREATE TRIGGER ledger_posting_check_running BEFORE INSERT ON ledger_posting "
    f"WHEN {_SQLITE_IS_CACHED} AND NEW.balance_after_msat IS NOT {_SQLITE_NEXT_BALANCE} BEGIN "
    "SELECT RAISE(ABORT, 'ledger: running balance does not match account balance'); END",
    "CREATE TRIGGER ledger_posting_uncached_no_running BEFORE INSERT ON ledger_posting "
    f"WHEN NOT {_SQLITE_IS_CACHED} AND NEW.balance_after_msat IS NOT NULL BEGIN "
    "SELECT RAISE(ABORT, 'ledger: running balances are kept only for cached accounts'); END",
    "CREATE TRIGGER ledger_posting_apply AFTER INSERT ON ledger_posting BEGIN "
    f"UPDATE ledger_account SET balance_msat = balance_msat + {_NATURAL_DELTA} "
    "WHERE id = NEW.account_id AND cached; END",
    "CREATE TRIGGER ledger_account_starts_at_zero BEFORE INSERT ON ledger_account "
    "WHEN NEW.balance_msat <> 0 BEGIN "
    "SELECT RAISE(ABORT, 'ledger: an account starts at zero; money arrives by journal'); END",
    *(
        f"CREATE TRIGGER ledger_account_kind_valid_{op.split()[0].lower()} BEFORE {op} "
        f"ON ledger_account WHEN NEW.kind NOT IN ({_KINDS}) BEGIN "
        "SELECT RAISE(ABORT, 'ledger: not an account kind'); END"
        for op in ("INSERT", "UPDATE OF kind")
    ),
]

SQLITE_TRIGGER_NAMES = [
    "ledger_posting_no_update",
    "ledger_posting_no_delete",
    "ledger_journal_no_update",
    "ledger_journal_no_delete",
    "ledger_posting_check_running",
    "ledger_posting_uncached_no_running",
    "ledger_posting_apply",
    "ledger_account_starts_at_zero",
    "ledger_account_kind_valid_insert",
    "ledger_account_kind_valid_update",
]
POSTGRES_TRIGGER_NAMES = [
    "ledger_posting_apply",
    "ledger_posting_balanced",
    "ledger_journal_balanced",
    "ledger_posting_append_only",
    "ledger_journal_append_only",
    "ledger_account_guard",
]


def install(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_INSTALL, params=None)
    elif vendor == "sqlite":
        for statement in SQLITE_INSTALL:
            schema_editor.execute(statement)
    else:
        raise RuntimeError(f"Satledger's ledger guards support PostgreSQL and SQLite, not {vendor}")


def uninstall(schema_editor) -> None:
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_UNINSTALL, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGER_NAMES:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def installed_trigger_names(connection) -> set[str]:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid::regclass::text LIKE 'ledger_%%'"
            )
        else:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {row[0] for row in cursor.fetchall()}


def expected_trigger_names(connection) -> set[str]:
    names = POSTGRES_TRIGGER_NAMES if connection.vendor == "postgresql" else SQLITE_TRIGGER_NAMES
    return set(names)
