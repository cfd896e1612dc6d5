"""The campaign layer: the only layer that knows rounds exist.

It owns the round — schedule, initial selection, train -> evaluate -> select -> label ->
commit — and calls the lower layers (training, metrics, scoring, strategies, data) with values.
"""

from rayfal.campaign.campaign import Campaign
from rayfal.campaign.driver import records_frame, run_job
from rayfal.campaign.oracle import AwaitingLabels, LabelAnswer, Oracle, SimulatedOracle
from rayfal.campaign.schedule import initial_selection, schedule

__all__ = ["AwaitingLabels", "Campaign", "LabelAnswer", "Oracle", "SimulatedOracle",
           "initial_selection", "records_frame", "run_job", "schedule"]
