"""Drives obzvon through a client generated from its OpenAPI document (tests/openapi.rs).

    python client_check.py BASE_URL TOKEN CAMPAIGN_NAME TRUNK

Creates a campaign, imports three leads (one with a number that is not one), starts the
campaign and reads its report and live view, all with the generated types; prints what it saw
as one JSON line. Any answer the document does not describe raises.
"""

import json
import sys

from obzvon_client import AuthenticatedClient
from obzvon_client.api.campaigns import campaign_action, create_campaign, get_campaign
from obzvon_client.api.leads import import_leads
from obzvon_client.api.reports import campaign_live, report
from obzvon_client.models import (
    Campaign,
    CampaignAction,
    CampaignSpec,
    CampaignState,
    ImportReport,
    LeadInput,
    LiveView,
    Report,
    ReportDimension,
    TimeZone,
)

base, token, name, trunk = sys.argv[1:5]
client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)

spec = CampaignSpec(name=name, trunk=trunk, caller_id="74950000000", timezone=TimeZone.EUROPE_MOSCOW, max_attempts=2)
campaign = create_campaign.sync(client=client, body=spec)
assert isinstance(campaign, Campaign), campaign
assert campaign.state == CampaignState.DRAFT, campaign.state

rows = [
    LeadInput(phone="+79161234567", name="Ivan Petrov", external_id="crm-1"),
    LeadInput(phone="+79161234568", name="Anna", external_id="crm-2"),
    LeadInput(phone="12", name="not a number"),
]
imported = import_leads.sync(client=client, id=campaign.id, body=rows)
assert isinstance(imported, ImportReport), imported
assert (imported.imported, imported.rejected_count) == (2, 1), imported
assert imported.rejected[0].row == 3, imported.rejected

started = campaign_action.sync(client=client, id=campaign.id, action=CampaignAction.START)
assert isinstance(started, Campaign) and started.state == CampaignState.RUNNING, started

again = get_campaign.sync(client=client, id=campaign.id)
assert isinstance(again, Campaign), again
leads = again.leads.to_dict() if again.leads else {}

live = campaign_live.sync(client=client, id=campaign.id)
assert isinstance(live, LiveView), live

rep = report.sync(client=client, dimension=ReportDimension.CAMPAIGNS, campaign_id=campaign.id)
assert isinstance(rep, Report), rep

print(json.dumps({
    "campaign_id": str(campaign.id),
    "state": started.state.value,
    "leads": leads,
    "live_state": live.state.value,
    "report_rows": len(rep.rows),
}))
