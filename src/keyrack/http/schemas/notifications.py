"""In-app notification bodies."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from keyrack.services.notifications import NotificationView


class NotificationOut(BaseModel):
    id: int
    type: str
    title: str
    body: str
    target_type: str
    target_ref: str | None
    user_id: int
    created_at: datetime
    read: bool
    read_at: datetime | None

    @classmethod
    def of(cls, view: NotificationView) -> NotificationOut:
        return cls(
            id=view.id,
            type=view.event_type,
            title=view.title,
            body=view.body,
            target_type=view.target_type,
            target_ref=view.target_ref,
            user_id=view.user_id,
            created_at=view.created_at,
            read=view.read,
            read_at=view.read_at,
        )
