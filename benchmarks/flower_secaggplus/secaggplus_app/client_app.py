"""The party's side: a legacy NumPyClient whose `fit` is SimMIM's local update, under Flower's secaggplus_mod.

`fit` runs exactly what SimMIM's own client runs for a round (`simmim.federated.local.local_update`:
`local_steps` AdamW steps on partition `partition-id` from the global weights, the update clipped to
`update_clip`) and returns the clipped update, with weight 1 (FedAvg here is the unweighted mean of
the updates, as in SimMIM's app). Under SecAgg+ the mod masks it before it leaves the node.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from simmim.federated.settings import FedSettings


class SimMIMClient(NumPyClient):
    def __init__(self, settings: FedSettings, party: int):
        self.settings = settings
        self.party = party

    def fit(self, parameters, config):
        from simmim.federated.local import Federation, local_update  # torch: only training needs it

        federation = Federation.from_settings(self.settings)
        update, metrics = local_update(federation, np.asarray(parameters[0], dtype=np.float32),
                                       federation.partition(self.party), round_index=int(config["round"]),
                                       party=self.party)
        metrics["partition"] = self.party
        return [update], 1, {k: float(v) for k, v in metrics.items()}


def client_fn(context: Context):
    settings = FedSettings.from_run_config(context.run_config)
    party = int(context.node_config["partition-id"])
    if not 0 <= party < settings.clients:
        raise ValueError(f"partition-id {party} is outside the run's {settings.clients} parties")
    return SimMIMClient(settings, party).to_client()


def secaggplus_when_configured(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's secaggplus_mod, for training messages that carry SecAgg+'s configs only.

    secaggplus_mod reads `msg.content.config_records["secaggplus_configs"]` from every training
    message and raises KeyError when the server runs a plain fit round (without SecAggPlusWorkflow);
    such messages go straight to the client here.
    """
    if msg.metadata.message_type == MessageType.TRAIN and RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, context)
    return secaggplus_mod(msg, context, call_next)


app = ClientApp(client_fn=client_fn, mods=[secaggplus_when_configured])
