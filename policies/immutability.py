"""Published policy versions are immutable in the database itself, not only in ``Model.save()``.

A verdict names the policy version it was judged under; if a queryset ``update()``,
a ``delete()`` or raw SQL could change that version, the record would lie. Triggers
refuse, on PostgreSQL and on SQLite (the demo's database):

- UPDATE of a published version's content (policy, number, name, description, change
  note, creation time); who published it and when stay writable, so deleting a user
  still sets ``published_by`` to NULL;
- DELETE of a published version;
- INSERT, UPDATE or DELETE of a category of a published version.

Publishing (the draft's UPDATE that gives it a number) and rollback (a new version)
are untouched. Both databases raise an ``IntegrityError`` naming the rule.
``install`` is idempotent: the migration runs it, and so does ``post_migrate``, as
SQLite drops a table's triggers when a later migration rebuilds the table.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

VERSION_MESSAGE = "published policy versions are immutable: publish a new version instead"
CATEGORY_MESSAGE = "categories of a published policy version are immutable: edit the draft and publish"
VERSION_CONTENT = ("policy_id", "number", "name", "description", "change_note", "created_at")

_PUBLISHED = "SELECT 1 FROM policies_policyversion v WHERE v.id = {side}.version_id AND v.number IS NOT NULL"

POSTGRESQL = [
    f"""
CREATE OR REPLACE FUNCTION policies_refuse_published_version_change() RETURNS trigger AS $$
BEGIN
    IF OLD.number IS NOT NULL AND (TG_OP = 'DELETE' OR
        ({", ".join(f"NEW.{c}" for c in VERSION_CONTENT)}) IS DISTINCT FROM ({", ".join(f"OLD.{c}" for c in VERSION_CONTENT)})) THEN
        RAISE EXCEPTION '{VERSION_MESSAGE} (version id %, number %)', OLD.id, OLD.number
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS policies_published_version_immutable ON policies_policyversion",
    """CREATE TRIGGER policies_published_version_immutable BEFORE UPDATE OR DELETE ON policies_policyversion
    FOR EACH ROW EXECUTE FUNCTION policies_refuse_published_version_change()""",
    f"""
CREATE OR REPLACE FUNCTION policies_refuse_published_category_change() RETURNS trigger AS $$
BEGIN
    IF (TG_OP IN ('UPDATE', 'DELETE') AND EXISTS ({_PUBLISHED.format(side="OLD")}))
       OR (TG_OP IN ('INSERT', 'UPDATE') AND EXISTS ({_PUBLISHED.format(side="NEW")})) THEN
        RAISE EXCEPTION '{CATEGORY_MESSAGE}' USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS policies_published_category_immutable ON policies_category",
    """CREATE TRIGGER policies_published_category_immutable BEFORE INSERT OR UPDATE OR DELETE ON policies_category
    FOR EACH ROW EXECUTE FUNCTION policies_refuse_published_category_change()""",
]

POSTGRESQL_REMOVE = [
    "DROP TRIGGER IF EXISTS policies_published_version_immutable ON policies_policyversion",
    "DROP TRIGGER IF EXISTS policies_published_category_immutable ON policies_category",
    "DROP FUNCTION IF EXISTS policies_refuse_published_version_change()",
    "DROP FUNCTION IF EXISTS policies_refuse_published_category_change()",
]

_SQLITE_CHANGED = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in VERSION_CONTENT)
SQLITE_TRIGGERS = {
    "policies_published_version_no_update": f"""BEFORE UPDATE ON policies_policyversion
        FOR EACH ROW WHEN OLD.number IS NOT NULL AND ({_SQLITE_CHANGED})
        BEGIN SELECT RAISE(ABORT, '{VERSION_MESSAGE}'); END""",
    "policies_published_version_no_delete": f"""BEFORE DELETE ON policies_policyversion
        FOR EACH ROW WHEN OLD.number IS NOT NULL
        BEGIN SELECT RAISE(ABORT, '{VERSION_MESSAGE}'); END""",
    "policies_published_category_no_insert": f"""BEFORE INSERT ON policies_category
        FOR EACH ROW WHEN EXISTS ({_PUBLISHED.format(side="NEW")})
        BEGIN SELECT RAISE(ABORT, '{CATEGORY_MESSAGE}'); END""",
    "policies_published_category_no_update": f"""BEFORE UPDATE ON policies_category
        FOR EACH ROW WHEN EXISTS ({_PUBLISHED.format(side="OLD")}) OR EXISTS ({_PUBLISHED.format(side="NEW")})
        BEGIN SELECT RAISE(ABORT, '{CATEGORY_MESSAGE}'); END""",
    "policies_published_category_no_delete": f"""BEFORE DELETE ON policies_category
        FOR EACH ROW WHEN EXISTS ({_PUBLISHED.format(side="OLD")})
        BEGIN SELECT RAISE(ABORT, '{CATEGORY_MESSAGE}'); END""",
}


def statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return POSTGRESQL
    if vendor == "sqlite":
        return [f"CREATE TRIGGER IF NOT EXISTS {name} {body}" for name, body in SQLITE_TRIGGERS.items()]
    return []  # other databases: Model.save()/delete() still refuse, raw SQL is not guarded


def removal_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return POSTGRESQL_REMOVE
    if vendor == "sqlite":
        return [f"DROP TRIGGER IF EXISTS {name}" for name in SQLITE_TRIGGERS]
    return []


def installed(connection: BaseDatabaseWrapper) -> bool:
    """Whether every trigger is in place (other databases: nothing to install)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname IN "
                "('policies_published_version_immutable', 'policies_published_category_immutable')"
            )
            return cursor.fetchone()[0] == 2
        if connection.vendor == "sqlite":
            names = list(SQLITE_TRIGGERS)
            cursor.execute(
                f"SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({', '.join('%s' for _ in names)})", names
            )
            return cursor.fetchone()[0] == len(names)
    return True


def install(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for statement in statements(connection.vendor):
            cursor.execute(statement)


def remove(connection: BaseDatabaseWrapper) -> None:
    with connection.cursor() as cursor:
        for statement in removal_statements(connection.vendor):
            cursor.execute(statement)
