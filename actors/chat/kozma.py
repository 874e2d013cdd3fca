"""KozmaActor: Kozma Prutkov, the built-in bot, an ordinary actor that writes to room `kozma`.

He sends himself a `Speak` message after a pause; on each one he posts an
aphorism through the registry like any client would, and schedules the next.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Never

import gevent

from actors.chat.message import Draft
from actors.chat.registry import Post
from actors.runtime.actor import Actor, ActorRef

USERNAME = "Козьма Прутков"
ROOM = "kozma"
APHORISMS_FILE = Path(__file__).with_name("kozma_aphorisms.txt")


@dataclass(frozen=True, slots=True)
class Speak:
    """Time to post the next aphorism (sent by the bot to itself)."""


# Every message the bot answers (besides the runtime's own `Probe` and `Describe`).
KozmaMessage = Speak


def load_aphorisms(path: Path = APHORISMS_FILE) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class KozmaActor(Actor):
    """Posts one of Prutkov's aphorisms `first_delay` s after start, then after random pauses.

    Args:
        registry: where the posts go.
        first_delay: seconds before the first aphorism.
        max_pause: the pause between aphorisms is uniform in [0, max_pause] seconds.
        aphorisms: the texts to choose from.
    """

    kind = "bot"

    def __init__(self, registry: ActorRef, first_delay: float = 5.0, max_pause: float = 60.0,
                 aphorisms: list[str] | None = None):
        super().__init__("kozma")
        self._registry = registry
        self._first_delay = first_delay
        self._max_pause = max_pause
        self._aphorisms = aphorisms or load_aphorisms()
        self._timer: gevent.Greenlet | None = None
        self.posted = 0

    def on_start(self) -> None:
        if self._timer is None:  # not again after a restart
            self._schedule(self._first_delay)

    def receive(self, message: KozmaMessage) -> None:
        match message:
            case Speak():
                text = random.choice(self._aphorisms)
                self._registry.tell(Post(Draft(ROOM, text), USERNAME))
                self.posted += 1
                self._schedule(random.uniform(0, self._max_pause))
            case _:
                unexpected: Never = message  # mypy fails here if a KozmaMessage has no case above
                raise TypeError(f"kozma cannot handle {unexpected!r}")

    def _schedule(self, delay: float) -> None:
        self._timer = gevent.spawn_later(delay, self._speak_later)

    def _speak_later(self) -> None:
        if self.ref.alive:
            self.ref.tell(Speak())

    def on_stop(self, reason: object) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)

    def describe(self) -> dict:
        return {"posted": self.posted}
