"""The custom search attributes of Dialer's workflows (Keyword), as operators query them in the
Temporal UI. Registered by `dialer run`, the tests and the compose stack. Never a phone number."""

from temporalio.common import SearchAttributeKey

SA_USER_ID = SearchAttributeKey.for_keyword("DialerUserId")
SA_CALL_STATUS = SearchAttributeKey.for_keyword("DialerCallStatus")
SA_CAMPAIGN_ID = SearchAttributeKey.for_keyword("DialerCampaignId")
SA_REQUEST_ID = SearchAttributeKey.for_keyword("DialerRequestId")
SA_PROVIDER = SearchAttributeKey.for_keyword("DialerProvider")
SEARCH_ATTRIBUTES = (SA_USER_ID, SA_CALL_STATUS, SA_CAMPAIGN_ID, SA_REQUEST_ID, SA_PROVIDER)
