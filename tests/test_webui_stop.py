"""The web app's stop between tiles, without a server: a cancelled task waits for its work."""
import asyncio
import threading

import pytest

from icmsr.apis import InferenceCancelled
from webui_stop import RunningRequests, StopRequest, run_stoppable


def _work(stop, in_flight, release, done):
    """100 'tiles'; tile 1 holds until released, so a stop always arrives while it runs."""
    def work():
        for tile in range(100):
            if tile == 1:
                in_flight.set()
                assert release.wait(60)
            stop.tile_done()
            done.append(tile)
            if stop.asked():  # the front door's should_stop, after every tile
                raise InferenceCancelled(f'after tile {tile}')
        return 'finished'
    return work


def test_a_cancelled_task_returns_only_after_the_work_stopped_at_the_next_tile(capsys):
    stop, in_flight, release, done = StopRequest(), threading.Event(), threading.Event(), []

    async def scenario():
        task = asyncio.ensure_future(run_stoppable(_work(stop, in_flight, release, done), stop))
        await asyncio.get_running_loop().run_in_executor(None, in_flight.wait)
        task.cancel()  # what Gradio's /cancel does to the event's task
        await asyncio.sleep(0.05)
        assert not task.done(), 'the task ended while its work was still running'
        assert stop.asked() and stop.reason == 'cancelled'
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert done == [0, 1] and (stop.asked_after, stop.tiles) == (1, 2)
    assert 'request stopped (cancelled): stop asked after 1 tile(s), work stopped after 2 tile(s)' \
        in capsys.readouterr().out


def test_a_closed_page_stops_the_work_of_its_session_only():
    running = RunningRequests()
    with running.register('page-a') as a, running.register('page-b') as b:
        running.stop_session('page-a', 'page closed')
        assert a.asked() and a.reason == 'page closed' and not b.asked()
    running.stop_session('page-b', 'page closed')  # gone: nothing to stop, no error
    assert not b.asked()
