"""API keys on SQLite and PostgreSQL: `keys revoke` names exactly one key, a rotated AISTATS_API_KEY is
revoked at start (and only static keys are), and 0009 classifies the keys stored before it."""

from __future__ import annotations

import asyncio
from typing import Any

from aistats_gateway.domain.keys import DEFAULT_WORKSPACE, hash_key, key_prefix
from aistats_gateway.services.keys import create_key, ensure_default_keys, listing, revoke
from aistats_gateway.storage.migrate import upgrade_to_head
from aistats_gateway.storage.store import Store, create_engine
from tests.storage.test_store import run


def active(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows if r["revoked_at"] is None}


def test_revoke_names_exactly_one_key_among_forty_in_several_workspaces(db_url: str) -> None:
    async def body(store: Store) -> None:
        keys = [await create_key(store, f"team{i % 4}") for i in range(40)]
        rows = {r["prefix"]: r for r in await store.list_keys()}
        assert len(rows) == 40, "new keys' prefixes tell them apart"
        by_key = {k: rows[k[:19]] for k in keys}
        assert all(len(r["prefix"]) == 19 and r["kind"] == "created" for r in by_key.values())

        # by id, by the whole key, by its SHA-256: each time exactly that key
        for arg, key in ((by_key[keys[0]]["id"], keys[0]), (keys[1], keys[1]), (hash_key(keys[2]), keys[2])):
            before = active(await store.list_keys())
            revoked, message = await revoke(store, arg, 100.0)
            assert revoked is not None and revoked["id"] == by_key[key]["id"], message
            assert before - active(await store.list_keys()) == {by_key[key]["id"]}
            assert await store.workspace_for_key(hash_key(key)) is None
        assert len(active(await store.list_keys())) == 37

        # a prefix, an unknown argument, an already revoked key: nothing revoked, and the message says why
        for arg, said in ((keys[5][:19], "is not a whole key but the beginning of 1 key(s)"),
                          ("sk-aistats-", "beginning of 40 key(s)"),
                          ("sk-aistats-nosuchkeyatall-0123456789abcdefghijklmnopqrstuvwxyz", "no key has"),
                          ("key_NOPE", "no key has the id, key or hash 'key_NOPE'"),
                          (keys[1], "already revoked")):
            revoked, message = await revoke(store, arg, 101.0)
            assert revoked is None and said in message, (arg, message)
            assert len(active(await store.list_keys())) == 37
        assert "nosuchkeyatall" not in message  # a would-be secret is never echoed whole

    run(db_url, body)


def test_keys_stored_with_short_prefixes_are_refused_by_prefix_and_listed_by_id(db_url: str) -> None:
    async def body(store: Store) -> None:
        await store.ensure_workspace("ws_a", "a")
        await store.ensure_workspace("ws_b", "b")
        old = ["sk-aistats-Q" + "x" * 30 + str(i) for i in range(3)]  # what 12-character prefixes allowed
        for i, key in enumerate(old):
            await store.add_api_key(f"key_old{i}", ("ws_a", "ws_b", "ws_b")[i], hash_key(key), key[:12], None)
        revoked, message = await revoke(store, "sk-aistats-Q", 1.0)
        assert revoked is None and "key_old0, key_old1, key_old2" in message
        assert len(active(await store.list_keys())) == 3
        assert [r["shown"] for r in listing(await store.list_keys())] == [None, None, None]
        revoked, _ = await revoke(store, old[1], 2.0)
        assert revoked is not None and active(await store.list_keys()) == {"key_old0", "key_old2"}

    run(db_url, body)


def test_a_rotated_static_key_is_revoked_at_start_and_only_static_keys_are(db_url: str) -> None:
    async def body(store: Store) -> None:
        assert await ensure_default_keys(store, "sk-static-one-0001", 1.0) is None
        created = await create_key(store, "default", "static")  # a hand-made key, even one labelled "static"
        other = await create_key(store, "team")
        assert await ensure_default_keys(store, "sk-static-one-0001", 2.0) is None  # a restart: nothing changes
        assert await store.workspace_for_key(hash_key("sk-static-one-0001")) == DEFAULT_WORKSPACE

        await ensure_default_keys(store, "sk-static-two-0002", 3.0)  # rotated
        assert await store.workspace_for_key(hash_key("sk-static-one-0001")) is None
        assert await store.workspace_for_key(hash_key("sk-static-two-0002")) == DEFAULT_WORKSPACE
        assert await store.workspace_for_key(hash_key(created)) == DEFAULT_WORKSPACE
        assert await store.workspace_for_key(hash_key(other)) == "ws_team"
        current = [r for r in listing(await store.list_keys()) if r["current_static"]]
        assert [r["prefix"] for r in current] == [key_prefix("sk-static-two-0002")] == ["sk-static"]  # half of it

        await ensure_default_keys(store, None, 4.0)  # unset: the last static key is left working
        assert await store.workspace_for_key(hash_key("sk-static-two-0002")) == DEFAULT_WORKSPACE
        await ensure_default_keys(store, "sk-static-one-0001", 5.0)  # back to a retired key: it stays revoked
        assert await store.workspace_for_key(hash_key("sk-static-one-0001")) is None
        assert await store.workspace_for_key(hash_key("sk-static-two-0002")) is None
        assert not [r for r in listing(await store.list_keys()) if r["current_static"]]

    run(db_url, body)


def test_0009_classifies_existing_keys_by_their_label(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from aistats_gateway.storage.migrate import alembic_config

    async def main() -> None:
        engine = create_engine(db_url)
        await upgrade_to_head(engine)
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(alembic_config(c), "0008_retention"))
            await conn.execute(text("INSERT INTO workspaces (id, name, created_at) VALUES ('ws_default', 'd', 1), "
                                    "('ws_t', 't', 1)"))
            for key_id, ws, name in (("key_s", "ws_default", "static"), ("key_g", "ws_default", "generated"),
                                     ("key_c", "ws_default", None), ("key_t", "ws_t", "static")):
                await conn.execute(text("INSERT INTO api_keys (id, workspace_id, key_hash, prefix, name, created_at) "
                                        "VALUES (:id, :ws, :h, 'sk-aistats-x', :name, 1)"),
                                   {"id": key_id, "ws": ws, "h": hash_key(key_id), "name": name})
        await upgrade_to_head(engine)
        store = Store(engine)
        try:
            kinds = {r["id"]: r["kind"] for r in await store.list_keys()}
            assert kinds == {"key_s": "static", "key_g": "generated", "key_c": "created", "key_t": "created"}
            await ensure_default_keys(store, "sk-new-static-key", 9.0)
            assert active(await store.list_keys()) == {"key_g", "key_c", "key_t"} | {
                r["id"] for r in await store.list_keys() if r["kind"] == "static" and r["id"] != "key_s"}
        finally:
            await store.close()

    asyncio.run(main())
