"""The heart of nane: actors that own all state and talk only through messages.

`runtime/` is the actor system (no chat in it), `chat/` the chat built on it,
`shared_rooms/` the Redis adapter for rooms shared by several processes, and
`system.py` starts the actors, wires them together and is the app's one door
into them (`Chat`). docs/actors.md follows one message through the code.

Follow one message: `chat/connection.serve` reads the frame -> `message.parse_frame`
validates it -> `registry.RegistryActor` finds or creates the room, stamps the
message and hands it on -> `room.RoomActor` keeps it in the history, and
`hub.HubActor` passes it to every `session.SessionActor`, which writes it to
its socket.
"""

from actors.runtime.actor import Actor, ActorError, ActorRef, ActorStopped, AskTimeout, MailboxFull
from actors.runtime.supervisor import Supervisor

__all__ = ["Actor", "ActorError", "ActorRef", "ActorStopped", "AskTimeout", "MailboxFull",
           "Supervisor"]
