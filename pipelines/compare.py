"""Rebuild the comparison report of any sweep from MLflow: `python pipelines/compare.py sweep=latest`.

Queries the sweep's child runs through the MLflow client, writes the report (Markdown, HTML, CSV,
plots) to a folder and logs it to the sweep's parent run under `report/`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from lightsweep.entry import command


@command("compare")
def main(cfg: DictConfig) -> None:
    from lightsweep.sweeps.report import find_sweep, publish_report
    from lightsweep.tracking.store import open_store, ui_command

    client = open_store(cfg.tracking_uri)
    parent_run_id = find_sweep(client, str(cfg.sweep), cfg.experiment_name)
    folder = Path(cfg.output_dir or Path(cfg.paths.log_dir) / "reports" / parent_run_id)
    publish_report(client, parent_run_id, folder, cfg.target_acc)
    print(f"Logged to parent run {parent_run_id}. Review it: {ui_command(cfg.tracking_uri)}")


if __name__ == "__main__":
    main.run()
