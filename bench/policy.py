"""Authorization policy checks with 10,000 ACL entries: Sygmax's SQL policy vs trivial peers and casbin.

    python bench/policy.py [--objects 2000] [--grants-per-object 5] [--members 500] [--iterations 2000]

One throwaway PostgreSQL, one workspace with ``--members`` members (owner, admin, editors,
viewers, a custom role), 50 teams, and ``--objects`` pages with ``--grants-per-object``
grants each (users, a team, a role; every fifth page restricted). Measured in the same run:

* sygmax: ``sygmax.auth.policy.authorize`` (one query: membership, role, restriction flag, every
  grant naming the user, their teams or their roles) for allowed and denied cases, on plain
  and restricted objects, and for a non-member;
* peer ``raw_grant_select``: a raw indexed SELECT of one grant row (the cheapest query that
  could answer anything at all) and peer ``select_1``: the bare round trip;
* peer ``casbin``: pycasbin (in-process, policy loaded in memory) with an equivalent model
  (RBAC with domains, team grouping, a custom ``restricted()`` function), the same answers
  asserted for every case.

Prints one JSON object (microseconds per check: p50, p99, mean) and writes it to
bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.report import emit  # noqa: E402
from sygmax.auth.policy import authorize, declare_permissions  # noqa: E402
from sygmax.auth.tokens import Actor  # noqa: E402
from sygmax.db.migrations import migrate, plan  # noqa: E402
from sygmax.plugins import Permission, Plugin  # noqa: E402
from tests.servers import PostgresServer  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "policy.json"
DOCS = Plugin(name="docs", permissions=[
    Permission("docs.read", "Read pages", default_roles=("editor", "viewer")),
    Permission("docs.edit", "Edit pages"),
])
PAGE = "docs.page"

CASBIN_MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && r.dom == p.dom && r.act == p.act && \
    ((p.obj == "*" && !restricted(r.dom, r.obj)) || p.obj == r.obj)
"""


def _stats(samples_ns: list[int]) -> dict[str, float]:
    micro = [sample / 1000 for sample in samples_ns]
    cuts = statistics.quantiles(micro, n=100, method="inclusive")
    return {"p50": round(cuts[49], 1), "p99": round(cuts[98], 1), "mean": round(statistics.fmean(micro), 1)}


async def populate(connection, args, rng: random.Random) -> dict:
    """One workspace with members, teams, a custom role, objects and their grants; returns the cast."""
    workspace_id = uuid.uuid4()
    users = [uuid.uuid4() for _ in range(args.members + 1)]  # the last one is a non-member
    await connection.copy_records_to_table(
        "sygmax_user", columns=["id", "email", "display_name"],
        records=[(user, f"u{number}@example.org", f"U{number}") for number, user in enumerate(users)])
    await connection.execute("INSERT INTO sygmax_workspace (id, name) VALUES ($1, 'bench')", workspace_id)
    custom_role = uuid.uuid4()
    await connection.execute(
        "INSERT INTO sygmax_role (id, workspace_id, name, permissions) VALUES ($1, $2, 'Reader', '{docs.read}')",
        custom_role, workspace_id)
    members = users[:-1]
    roles = {}
    records = []
    for number, user in enumerate(members):
        role = "owner" if number == 0 else "admin" if number == 1 else "editor" if number < 100 else "viewer"
        if number % 10 == 9:
            roles[user] = ("custom", custom_role)
            records.append((workspace_id, user, None, custom_role))
        else:
            roles[user] = (role, None)
            records.append((workspace_id, user, role, None))
    await connection.copy_records_to_table("sygmax_membership", columns=["workspace_id", "user_id", "role", "role_id"],
                                           records=records)
    teams = [uuid.uuid4() for _ in range(50)]
    await connection.copy_records_to_table(
        "sygmax_team", columns=["id", "workspace_id", "name"],
        records=[(team, workspace_id, f"T{number}") for number, team in enumerate(teams)])
    team_members = {team: rng.sample(members[2:], 10) for team in teams}
    await connection.copy_records_to_table(
        "sygmax_team_member", columns=["workspace_id", "team_id", "user_id"],
        records=[(workspace_id, team, user) for team, people in team_members.items() for user in people])

    objects, grants = [], []
    for number in range(args.objects):
        object_id = f"p{number}"
        restricted = number % 5 == 0
        objects.append((workspace_id, PAGE, object_id, restricted))
        people = rng.sample(members[2:], args.grants_per_object - 2)
        for index, user in enumerate(people):
            codes = ["acl.manage", "docs.edit", "docs.read"] if index == 0 else ["docs.read"]
            grants.append((workspace_id, PAGE, object_id, "user", user, None, None, None, codes))
        grants.append((workspace_id, PAGE, object_id, "team", None, rng.choice(teams), None, None, ["docs.read"]))
        grants.append((workspace_id, PAGE, object_id, "role", None, None, custom_role, None, ["docs.edit"]))
    await connection.copy_records_to_table("sygmax_acl_object",
                                           columns=["workspace_id", "object_type", "object_id", "restricted"],
                                           records=objects)
    await connection.copy_records_to_table(
        "sygmax_acl_grant", columns=["workspace_id", "object_type", "object_id", "principal_kind", "user_id",
                                     "team_id", "role_id", "role", "permissions"], records=grants)
    await connection.execute("ANALYZE")
    return {"workspace_id": workspace_id, "members": members, "outsider": users[-1], "roles": roles,
            "teams": team_members, "objects": objects, "grants": grants, "custom_role": custom_role}


def pick_cases(cast: dict) -> list[tuple[str, uuid.UUID, str, str | None, bool]]:
    """(name, user, permission, object id or None, expected answer)."""
    grants = cast["grants"]
    restricted_user = next(g for g in grants if g[2] == "p0" and g[3] == "user")[4]
    restricted_team = next(g for g in grants if g[2] == "p0" and g[3] == "team")[5]
    team_member = next(user for user in cast["teams"][restricted_team]
                       if not any(g[2] == "p0" and g[4] == user for g in grants)
                       and cast["roles"][user][0] != "custom")
    granted_on_p1 = {g[4] for g in grants if g[2] == "p1" and g[4]}
    teams_on_p1 = {g[5] for g in grants if g[2] == "p1" and g[5]}
    on_p1_via_team = {user for team in teams_on_p1 for user in cast["teams"][team]}
    viewer = next(user for user, (role, _) in cast["roles"].items() if role == "viewer"
                  and user not in granted_on_p1 and user not in on_p1_via_team)
    editor = next(user for user, (role, _) in cast["roles"].items() if role == "editor")
    admin, owner = cast["members"][1], cast["members"][0]
    return [
        ("plain_allowed_by_role", editor, "docs.edit", "p1", True),
        ("plain_denied", viewer, "docs.edit", "p1", False),
        ("restricted_allowed_by_user_grant", restricted_user, "docs.edit", "p0", True),
        ("restricted_allowed_by_team_grant", team_member, "docs.read", "p0", True),
        ("restricted_denied_to_admin", admin, "docs.read", "p0", False),
        ("restricted_denied_to_owner", owner, "docs.read", "p0", False),
        ("non_member_denied", cast["outsider"], "docs.read", "p1", False),
        ("workspace_level_allowed", owner, "workspace.update", None, True),
    ]


async def time_async(call, iterations: int) -> list[int]:
    for _ in range(min(20, iterations)):  # warm-up: prepared statements, caches
        await call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        await call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def time_sync(call, iterations: int) -> list[int]:
    for _ in range(min(20, iterations)):
        call()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return samples


def casbin_enforcer(cast: dict, directory: Path):
    """An equivalent casbin model: role policies on "*" (ignored on restricted objects), grants per object."""
    import casbin

    model_path = directory / "model.conf"
    model_path.write_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(str(model_path))
    dom = str(cast["workspace_id"])
    restricted = {object_id for _, _, object_id, flag in cast["objects"] if flag}
    enforcer.add_function("restricted", lambda domain, obj: domain == dom and obj in restricted)
    started = time.perf_counter()
    policies = [
        ["role:owner", dom, "*", code] for code in ("docs.read", "docs.edit", "workspace.update", "acl.manage")
    ] + [["role:admin", dom, "*", code] for code in ("docs.read", "docs.edit", "workspace.update", "acl.manage")
         ] + [["role:editor", dom, "*", code] for code in ("docs.read", "docs.edit")
              ] + [["role:viewer", dom, "*", "docs.read"], ["role:custom", dom, "*", "docs.read"]]
    for _, _, object_id, kind, user, team, role_id, role, codes in cast["grants"]:
        subject = {"user": f"user:{user}", "team": f"team:{team}",
                   "role": f"role:{role}" if role else "role:custom"}[kind]
        policies += [[subject, dom, object_id, code] for code in codes]
    enforcer.add_policies(policies)
    groupings = [[f"user:{user}", f"role:{role}", dom] for user, (role, _) in cast["roles"].items()]
    groupings += [[f"user:{user}", f"team:{team}", dom] for team, people in cast["teams"].items() for user in people]
    enforcer.add_named_grouping_policies("g", groupings)
    load_ms = (time.perf_counter() - started) * 1000
    return enforcer, len(policies), round(load_ms, 1)


async def run(args) -> dict:
    rng = random.Random(7)
    server = PostgresServer().start()
    try:
        url = server.url("sygmax")
        await migrate(url, plan([]))
        connection = await asyncpg.connect(url)
        try:
            cast = await populate(connection, args, rng)
            declare_permissions([DOCS])
            workspace_id = cast["workspace_id"]
            entries = await connection.fetchval("SELECT count(*) FROM sygmax_acl_grant")
            cases = pick_cases(cast)
            calls = {}
            for name, user, permission, object_id, expected in cases:
                actor = Actor(user, "bench@example.org", "Bench", False, scopes=frozenset({"*"}))
                kwargs = {"object_type": PAGE, "object_id": object_id} if object_id else {}

                async def check(actor=actor, permission=permission, kwargs=kwargs):
                    return await authorize(connection, actor, permission, workspace_id=workspace_id, **kwargs)

                answer = await check()
                assert answer is expected, (name, answer)
                calls[name] = check

            grant_user = next(g for g in cast["grants"] if g[2] == "p0" and g[3] == "user")[4]

            async def raw_select():
                return await connection.fetchval(
                    "SELECT permissions FROM sygmax_acl_grant WHERE workspace_id = $1 AND object_type = $2 "
                    "AND object_id = $3 AND principal_kind = 'user' AND user_id = $4", workspace_id, PAGE, "p0",
                    grant_user)

            assert await raw_select()
            calls["peer:raw_grant_select"] = raw_select
            calls["peer:select_1"] = lambda: connection.fetchval("SELECT 1")
            # Round-robin in rounds, so background load on the machine falls on every case alike.
            samples: dict[str, list[int]] = {name: [] for name in calls}
            rounds = 10
            for _ in range(rounds):
                for name, call in calls.items():
                    samples[name] += await time_async(call, args.iterations // rounds)
            results = {name: _stats(values) for name, values in samples.items() if not name.startswith("peer:")}
            peers = {name[5:]: _stats(values) for name, values in samples.items() if name.startswith("peer:")}
            plan_text = await connection.fetchval(
                "EXPLAIN (FORMAT JSON) SELECT 1 FROM sygmax_acl_grant g WHERE g.workspace_id = $1 "
                "AND g.object_type = $2 AND g.object_id = $3", workspace_id, PAGE, "p1")
        finally:
            await connection.close()
    finally:
        server.stop()

    casbin_results: dict = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            enforcer, policy_lines, load_ms = casbin_enforcer(cast, Path(directory))
            dom = str(cast["workspace_id"])
            for name, user, permission, object_id, expected in cases:
                request = (f"user:{user}", dom, object_id or "*", permission)
                if object_id is None:
                    request = (f"user:{user}", dom, "workspace", permission)
                answer = enforcer.enforce(*request)
                assert answer is expected, ("casbin", name, answer)
                casbin_results[name] = _stats(time_sync(lambda request=request: enforcer.enforce(*request),
                                                        args.casbin_iterations))
            casbin_results = {"policy_lines": policy_lines, "load_ms": load_ms, "checks_us": casbin_results}
    except ImportError:
        casbin_results = {"skipped": "casbin is not installed (pip install casbin)"}

    index_used = json.dumps(json.loads(plan_text) if isinstance(plan_text, str) else plan_text)
    return {
        "benchmark": "policy",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": {"acl_entries": entries, "objects": args.objects, "restricted_objects": args.objects // 5,
                   "members": args.members, "teams": 50, "iterations": args.iterations,
                   "casbin_iterations": args.casbin_iterations},
        "unit": "microseconds per check (one asyncpg connection, sequential awaits, loopback PostgreSQL)",
        "sygmax_authorize_us": results,
        "peers_us": peers,
        "casbin": casbin_results,
        "grant_lookup_uses_index": "sygmax_acl_grant_principal" in index_used,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--grants-per-object", type=int, default=5)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--iterations", type=int, default=2000)
    parser.add_argument("--casbin-iterations", type=int, default=50)
    args = parser.parse_args()
    if args.grants_per_object < 3 or args.members < 120:
        parser.error("--grants-per-object needs at least 3 and --members at least 120")
    result = asyncio.run(run(args))
    emit(result, RESULTS)


if __name__ == "__main__":
    main()
