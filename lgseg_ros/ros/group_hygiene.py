"""Destroyed entities leave their callback groups.

rclpy's ``CallbackGroup.add_entity`` keeps a weakref to every subscription, timer, service,
client and event handler ever added, and nothing removes it when the entity is destroyed.
The node destroys and makes entities on every lifecycle cycle (input subscriptions, the
status timer, output publishers' QoS event handlers), on every input renewal and every
service renewal, so a peer cycling ``~/change_state`` grew the groups without bound: about
13.6 KB a cycle with 16 cameras, never given back (probe round 14). Each destroy here drops
the entity's entries once it is destroyed (dropping them before raced the executor's
``can_execute``, which asserts that a ready entity is in its group).
"""
from __future__ import annotations

import weakref


def forget(entity) -> None:
    """Drop ``entity`` and its QoS event handlers from the callback groups that hold them."""
    for part in (entity, *getattr(entity, "event_handlers", ())):
        group = getattr(part, "callback_group", None)
        if group is not None:
            group.entities.discard(weakref.ref(part))


def _forgetting(method: str):
    def destroy(self, entity) -> bool:
        done = getattr(super(ForgetsDestroyedEntities, self), method)(entity)
        forget(entity)
        return done
    destroy.__name__ = method
    return destroy


class ForgetsDestroyedEntities:
    """Mixin for an rclpy Node (before it in the bases): every destroy_* also forgets."""

    destroy_subscription = _forgetting("destroy_subscription")
    destroy_publisher = _forgetting("destroy_publisher")
    destroy_timer = _forgetting("destroy_timer")
    destroy_service = _forgetting("destroy_service")
    destroy_client = _forgetting("destroy_client")
