"""The call context's limits (contracts/context.py) keep every accepted call within Twilio's
TwiML limit: whatever variables and URL pass the checks, the Twilio provider builds a
document under 4,000 characters, so an accepted call is never refused for its size."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import context
from core.config import Settings
from telephony.base import DialRequest
from telephony.twilio import MAX_TWIML_CHARS, twiml_for

# Every character that escaping lengthens, and ordinary ones.
VALUE_CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from("&<>\"'")
NAMES = st.from_regex(context.VARIABLE_NAME, fullmatch=True).filter(
    lambda n: n not in context.RESERVED_PARAMETERS
)
VALUES = (
    st.text(VALUE_CHARS, max_size=context.MAX_VARIABLE_CHARS)
    | st.integers(-context.MAX_SAFE_INTEGER, context.MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
)


def worst_url() -> str:
    """The longest accepted URL: & escapes to five characters, placeholders to 36."""
    base = "wss://agent.example.test/{call_session_id}?"
    url = base + "&" * ((context.MAX_MEDIA_STREAM_URL_CHARS - len(base) - 24) // 5)
    assert context.media_stream_url_problem(url) is None
    assert context.media_stream_url_problem(url + "&&") is not None
    return url


def dial_request(url: str, variables: dict[str, object]) -> DialRequest:
    ids = [str(uuid.uuid4()) for _ in range(6)]
    template = context.fill_media_stream_url(url, ids[0], ids[1])
    return DialRequest(
        call_session_id=ids[0],
        request_id=ids[1],
        attempt=1,
        to_number="+12025550100",
        from_number="+12025550199",
        media_stream_url=template,
        stream_parameters=context.stream_parameters(
            request_id=ids[1],
            call_session_id=ids[0],
            user_id=ids[2],
            agent_id=ids[3],
            workflow_id=ids[4],
            campaign_id=ids[5],
            variables=variables,
        ),
    )


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, VALUES, max_size=context.MAX_VARIABLES + 4))
def test_accepted_variables_always_fit_twilios_twiml(variables: dict[str, object]) -> None:
    if context.variables_problem(variables) is not None:
        return
    twiml = twiml_for(dial_request(worst_url(), variables))  # raises Rejected when too long
    assert len(twiml) <= MAX_TWIML_CHARS


def test_the_budget_filled_to_the_brim_still_fits() -> None:
    # As many escaped characters as the variables' budget allows, with the longest URL.
    variables: dict[str, object] = {}
    for i in range(context.MAX_VARIABLES):
        trial = {**variables, f"v{i:02}": "&" * 60}
        if context.variables_problem(trial) is not None:
            break
        variables = trial
    assert len(variables) > 1
    assert len(twiml_for(dial_request(worst_url(), variables))) <= MAX_TWIML_CHARS


def test_stream_parameters_are_the_ids_then_the_variables_as_strings() -> None:
    params = context.stream_parameters(
        request_id="r",
        call_session_id="s",
        user_id="u",
        agent_id=None,
        workflow_id="w",
        campaign_id=None,
        variables={"n": 3, "f": 2.5, "yes": True, "no": False, "s": "x"},
    )
    assert params == {
        "request_id": "r",
        "call_session_id": "s",
        "user_id": "u",
        "workflow_id": "w",
        "n": "3",
        "f": "2.5",
        "yes": "true",
        "no": "false",
        "s": "x",
    }


def test_merged_variables_let_a_recipient_override_and_remove() -> None:
    assert context.merged_variables({"a": 1, "b": 2, "c": 3}, {"b": 20, "c": None, "d": 4}) == {
        "a": 1,
        "b": 20,
        "d": 4,
    }


def test_the_worker_refuses_a_default_url_no_call_could_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from worker import check_media_stream_default

    with pytest.raises(SystemExit, match="DIALER_MEDIA_STREAM_URL: media_stream_url must start"):
        check_media_stream_default(Settings(data_dir=tmp_path, media_stream_url="https://x.test"))
    check_media_stream_default(
        Settings(data_dir=tmp_path, media_stream_url="wss://x.test/{request_id}")
    )
    assert "no_media_stream" not in caplog.text

    # Production without a default: said at start (the other production checks aside).
    check_media_stream_default(Settings(data_dir=tmp_path, env="production"))
    assert "DIALER_MEDIA_STREAM_URL is not set" in caplog.text
