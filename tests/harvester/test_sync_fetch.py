"""The fetch pipeline's memory bound: bodies fetched but not yet committed stay under a budget."""

from __future__ import annotations

import asyncio

from met_harvester.sync_fetch import ByteBudget


async def test_byte_budget_makes_a_taker_wait_for_room() -> None:
    budget = ByteBudget(100)
    await budget.take(60)
    second = asyncio.create_task(budget.take(50))  # 110 > 100: waits
    await asyncio.sleep(0.01)
    assert not second.done() and budget.used == 60
    await budget.give(60)
    await asyncio.wait_for(second, timeout=5)
    assert budget.used == 50
    await budget.give(50)
    await asyncio.wait_for(budget.take(500), timeout=5)  # alone, one body may exceed the budget
    assert budget.used == 500
