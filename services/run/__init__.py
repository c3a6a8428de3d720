"""`gpt4batch run` as a process hosted by `common/service.host`: its main job (ingest
until the sink has finished the batch, `job.py`, `completion.py`) and its staged
shutdown, the stop order host runs (`stop_order.py`). `cli/run/command.py` wires them."""
