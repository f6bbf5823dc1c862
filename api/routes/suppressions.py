"""The user's do-not-call list."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response
from sqlmodel import col, select

from api.deps import AUTH_ERRORS, CurrentUser, SessionDep, SettingsDep
from api.schemas import Detail, SuppressionCreate, SuppressionPublic
from core.phone import InvalidNumber, normalize
from store.models import SuppressedNumber

router = APIRouter(prefix="/api/v1/suppressions", tags=["suppressions"], responses=AUTH_ERRORS)


def _public(row: SuppressedNumber) -> SuppressionPublic:
    return SuppressionPublic(phone_number=row.number, reason=row.reason, created_at=row.created_at)


def _normalized(number: str, region: str) -> str:
    try:
        return normalize(number, region)
    except InvalidNumber as exc:
        raise HTTPException(422, f"phone_number: {exc}") from exc


@router.get("", response_model=list[SuppressionPublic])
def list_suppressions(user: CurrentUser, session: SessionDep) -> list[SuppressionPublic]:
    """Numbers this user never calls."""
    rows = session.exec(
        select(SuppressedNumber)
        .where(SuppressedNumber.user_id == user.user_id)
        .order_by(col(SuppressedNumber.created_at))
    ).all()
    return [_public(r) for r in rows]


@router.post("", response_model=SuppressionPublic, status_code=201)
def add_suppression(
    body: SuppressionCreate, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> SuppressionPublic:
    """Add a number to the do-not-call list (adding it twice keeps one entry)."""
    number = _normalized(body.phone_number, settings.default_region)
    row = session.exec(
        select(SuppressedNumber).where(
            SuppressedNumber.user_id == user.user_id, SuppressedNumber.number == number
        )
    ).first()
    if row is None:
        row = SuppressedNumber(user_id=user.user_id, number=number, reason=body.reason)
        session.add(row)
        session.commit()
    return _public(row)


@router.delete(
    "/{number}",
    status_code=204,
    responses={404: {"model": Detail, "description": "Not on the list"}},
)
def remove_suppression(
    number: str, user: CurrentUser, session: SessionDep, settings: SettingsDep
) -> Response:
    """Take a number off the do-not-call list."""
    normalized = _normalized(number, settings.default_region)
    row = session.exec(
        select(SuppressedNumber).where(
            SuppressedNumber.user_id == user.user_id, SuppressedNumber.number == normalized
        )
    ).first()
    if row is None:
        raise HTTPException(404, "number is not on the do-not-call list")
    session.delete(row)
    session.commit()
    return Response(status_code=204)
