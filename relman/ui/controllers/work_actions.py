"""Work on versions: import a model, register a dataset, compress, evaluate, optimize, export
or import a signed bundle, write a model card.

Compress, evaluate and optimize queue their jobs directly (the app layer checks everything
that needs no torch first). Import, dataset registration and bundle export/import read every
byte of their files, so they are queued as jobs too (`relman.app.background`) and tracked:
the window says how each ended. Only the model card (a small text file from catalog rows)
is written inline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog

from relman.errors import RelmanError
from relman.ui.controllers import ActionSpec, Controller, job_label, needs
from relman.ui.snapshot import VersionRow


class WorkActions(Controller):
    def actions(self) -> list[ActionSpec]:
        return [
            ActionSpec("import", "Import model…", "Ctrl+I", self.action_import),
            ActionSpec("dataset", "Register dataset…", "Ctrl+D", self.action_register_dataset),
            ActionSpec("compress", "Compress…", "Ctrl+K", self.action_compress),
            ActionSpec("evaluate", "Evaluate…", "Ctrl+E", self.action_evaluate),
            ActionSpec("optimize", "Optimize…", "Ctrl+Shift+O", self.action_optimize),
            ActionSpec("export", "Export bundle…", "Ctrl+Shift+E", self.action_export),
            ActionSpec("import-bundle", "Import bundle…", "Ctrl+Shift+I", self.action_import_bundle),
            ActionSpec("card", "Write model card…", "Ctrl+Shift+M", self.action_model_card),
            ActionSpec("card-view", "View model card…", "", self.action_view_model_card,
                       "The selected version's model card, rendered (relman.ui.qt_card_view)"),
            ActionSpec("optimize-results", "Optimization candidates…", "", self.action_optimize_results,
                       "Every candidate of a finished search with its figures, the chosen one marked"),
        ]

    def action_view_model_card(self) -> Any:
        from relman.ui.qt_card_view import open_model_card

        return open_model_card(self.window)

    def action_optimize_results(self) -> Any:
        from relman.ui.qt_optimize_results import open_optimize_results

        return open_optimize_results(self.window)

    # -- catalog lists for the dialogs --------------------------------------------------------------
    def datasets(self) -> list[str]:
        return [r[0] for r in self.catalog.conn.execute("SELECT name FROM datasets ORDER BY name")]

    def datasets_for(self, versions: list[VersionRow]) -> list[str]:
        """Datasets whose kind every selected version's task reads (the task table's data_kinds)."""
        from relman.tasks.specs import find_task

        rows = self.catalog.conn.execute("SELECT name, kind FROM datasets ORDER BY name").fetchall()
        specs = [find_task(v.task) for v in versions]
        return [name for name, kind in rows if all(s is None or kind in s.data_kinds for s in specs)]

    def suites(self) -> list[str]:
        from relman.evaluate import registry

        return list(registry.all_suite_names()) or list(registry.ORDER)

    def suites_for(self, versions: list[VersionRow]) -> list[str]:
        """The suites that apply to every selected version's task (the task table says which)."""
        from relman.tasks.specs import find_task

        names = self.suites()
        for v in versions:
            spec = find_task(v.task)
            if spec is not None:
                names = [n for n in names if n in spec.suites]
        return names

    def default_suites_for(self, versions: list[VersionRow], has_dataset: bool) -> list[str]:
        from relman.evaluate.registry import default_suites

        out: list[str] = []
        for v in versions:
            out += [s for s in default_suites(v.task, has_dataset) if s not in out]
        return out

    def recipes_for(self, versions: list[VersionRow]) -> list[Any]:
        """Recipes that can take the selected versions: their task and format (count aside;
        the dialog opens on one that takes as many parents as are selected)."""
        from relman.compress.registry import all_recipes

        fits = []
        for r in all_recipes():
            if all(v.format in r.input_formats and (r.tasks is None or v.task in r.tasks) for v in versions):
                fits.append(r)
        return fits or list(all_recipes())

    # -- import / dataset (jobs) ----------------------------------------------------------------------
    def action_import(self) -> None:
        from relman.ui.qt_dialogs import ImportDialog

        vals = self.run_dialog(ImportDialog(self.window.snapshot.models(), self.window))  # proposes a name
        if vals:
            self.import_model(**vals)

    def import_model(self, path: str, model: str, version: str | None = None, new_architecture: bool = False) -> int:
        from relman.app.background import queue_import_model

        job = queue_import_model(self.catalog, path, model, version=version, new_architecture=new_architecture)

        def done(row: dict[str, Any]) -> None:
            self.info(f"Imported {Path(path).name} as {row['result'].get('version', model)}")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Import {Path(path).name} as {model}", done)

    def action_register_dataset(self) -> None:
        from relman.ui.qt_dialogs import DatasetDialog

        vals = self.run_dialog(DatasetDialog(self.window, existing=self.datasets()))
        if vals:
            self.register_dataset(**vals)

    def register_dataset(self, path: str, name: str, format: str | None = None, text_col: str | None = "text",
                         label_col: str | None = "label", group_col: str | None = None, x_key: str | None = None,
                         y_key: str | None = None, val_fraction: float = 0.0, test_fraction: float = 0.0) -> int:
        from relman.app.background import queue_register_dataset

        job = queue_register_dataset(self.catalog, path, name, format=format, text_col=text_col,
                                     label_col=label_col, group_col=group_col, x_key=x_key, y_key=y_key,
                                     val_fraction=val_fraction, test_fraction=test_fraction)

        def done(row: dict[str, Any]) -> None:
            self.info(f"Registered dataset {name} ({row['result'].get('rows', '?')} rows)")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Register dataset {name}", done)

    # -- compress / evaluate / optimize (queued) -----------------------------------------------------
    def action_compress(self) -> None:
        from relman.ui.qt_dialogs import CompressDialog

        versions = self.selected_or_error("compress it")
        recipes = self.recipes_for(versions)
        if not recipes:
            raise RelmanError("no compression recipes are registered in this build")
        dialog = CompressDialog(recipes, [v.ref for v in versions], self.window, self.datasets(),
                                formats={v.ref: v.format for v in versions},
                                adapter_bases={v.ref: v.adapter_base for v in versions},
                                tasks={v.ref: v.task for v in versions}, settings=self.window.settings)
        self.run_dialog(dialog, lambda vals: self.queue_compression(**vals))

    def queue_compression(self, recipe: str, params: dict[str, Any], parents: list[str], device: str = "auto",
                          dataset: str | None = None, model: str | None = None) -> int:
        from relman.app.compress import queue_compression

        job = queue_compression(self.catalog, parents if len(parents) > 1 else parents[0], recipe, params=params,
                                device=device, dataset=dataset, model=model)
        self.info(f"Queued {recipe} on {', '.join(parents)}" + (f" as a version of {model}" if model else "")
                  + f" ({job_label(job)})")
        self._track(job, f"{recipe} on {', '.join(parents)}")
        self.window.refresh(force=True)
        return job

    def _track(self, job: Any, label: str) -> None:
        """Report the end of queued work (a message, a desktop notification) and show the job."""
        ids = job if isinstance(job, (list, tuple)) else [job]
        for j in ids:
            self.window.job_actions.track(int(j["id"] if isinstance(j, dict) else j), label)

    def action_evaluate(self) -> None:
        versions = self.selected_or_error("evaluate it")
        self.run_dialog(self.evaluate_dialog(versions), lambda vals: self.queue_evaluation(**vals))

    def evaluate_dialog(self, versions: list[VersionRow]) -> Any:
        from relman.ui.qt_dialogs import EvaluateDialog

        datasets = self.datasets_for(versions)
        offered = self.suites_for(versions)
        models = {v.model for v in versions}
        chosen = {v.id for v in versions}
        others = [v.ref for v in self.window.snapshot.versions if v.model in models and v.id not in chosen]
        return EvaluateDialog([v.ref for v in versions], datasets + ["(none)"], offered, self.window,
                              defaults=self.default_suites_for(versions, bool(datasets)),
                              fidelity_parents=others,
                              not_applicable=[s for s in self.suites() if s not in offered],
                              tasks=[v.task for v in versions])

    def queue_evaluation(self, refs: list[str], dataset: str | None, suites: list[str] | None,
                         device: str = "auto", parent: str | None = None) -> list[int]:
        from relman.app.evaluate import queue_evaluation

        jobs = queue_evaluation(self.catalog, refs, dataset=dataset, suites=suites, device=device, parent=parent)
        self.info(f"Queued evaluation of {', '.join(refs)} ({job_label(jobs)})")
        for ref, j in zip(refs, jobs):
            self._track(j, f"Evaluation of {ref}")
        self.window.refresh(force=True)
        return jobs

    def queue_explain(self, ref: str, against: str | None, dataset: str, *, examples: int | None = None,
                      method: str = "auto", device: str = "auto") -> list[int]:
        """Explain jobs for a version and the one it is compared with (the Explain view's
        "Compute attributions"); a refusal is shown and queues nothing."""
        from relman.app.explain import queue_explain_pair

        try:
            jobs = queue_explain_pair(self.catalog, ref, against, dataset, examples=examples, method=method,
                                      device=device)
        except RelmanError as e:
            self.error(str(e))
            return []
        self.info(f"Queued explanation of {ref}" + (f" and {against}" if against else "") + f" ({job_label(jobs)})")
        self._track(jobs, f"Explanation of {ref}")
        return jobs

    def queue_generation(self, refs: list[str], prompts: list[dict[str, str]], *, max_new_tokens: int) -> int | None:
        """One generation job for the versions side by side (the Generate view's "Generate");
        a refusal is shown and queues nothing."""
        from relman.app.generation import queue_generation

        try:
            job = queue_generation(self.catalog, refs, prompts, max_new_tokens=max_new_tokens)
        except RelmanError as e:
            self.error(str(e))
            return None
        self.info(f"Queued generation with {', '.join(refs)} ({job_label(job)})")
        self._track(job, "Generation")
        return job

    def queue_diff(self, ref_a: str, ref_b: str) -> int | None:
        """One job comparing two versions' weights (the Diff view's "Compare"); a refusal is
        shown and queues nothing."""
        from relman.app.diff import queue_diff

        try:
            job = queue_diff(self.catalog, ref_a, ref_b)
        except RelmanError as e:
            self.error(str(e))
            return None
        self.info(f"Queued the comparison of {ref_a} and {ref_b} ({job_label(job)})")
        self._track(job, "Comparison")
        return job

    def action_optimize(self) -> None:
        from relman.ui.qt_dialogs import SimpleFormDialog

        v = self.selected_or_error("optimize it")[0]
        max_drop = QDoubleSpinBox()
        max_drop.setRange(0.0, 0.99)
        max_drop.setDecimals(3)
        max_drop.setSingleStep(0.005)
        max_drop.setValue(0.01)
        objective = QComboBox()
        objective.addItems(["latency", "size"])
        dataset = QComboBox()
        dataset.addItems(self.datasets())
        device = QComboBox()
        device.addItems(["auto", "cpu", "cuda:0"])
        vals = self.run_dialog(SimpleFormDialog(
            f"Optimize {v.ref} (accuracy-aware search)",
            [("Max accuracy drop", max_drop), ("Objective", objective), ("Dataset", dataset), ("Device", device)],
            needs("Dataset"), self.window))
        if vals:
            self.queue_optimization(v.ref, max_drop=vals["Max accuracy drop"], objective=vals["Objective"],
                                    dataset=vals["Dataset"], device=vals["Device"])

    def queue_optimization(self, ref: str, *, max_drop: float, objective: str, dataset: str,
                           device: str = "auto") -> int:
        from relman.app.compress import queue_optimization

        job = queue_optimization(self.catalog, ref, max_drop=max_drop, objective=objective, dataset=dataset,
                                 device=device)
        self.info(f"Optimization of {ref} queued ({job_label(job)})")

        def done(row: dict[str, Any]) -> None:
            best = (row.get("result") or {}).get("best")
            self.info(f"Optimization of {ref} ended: {best or 'no candidate within the budget'} "
                      "(every candidate: Work → Optimization candidates…)")
            self.window.refresh(force=True)
        self.window.job_actions.track(int(job["id"] if isinstance(job, dict) else job), f"Optimization of {ref}", done)
        self.window.refresh(force=True)
        return job

    # -- bundles and cards ------------------------------------------------------------------------------
    def action_export(self) -> None:
        from relman.ui.qt_export import ExportDialog
        from relman.ui.qt_signing import own_keys  # the approve dialog's list of your keys

        v = self.selected_or_error("export it")[0]
        own = own_keys()
        default = str(Path.home() / f"{v.model}-{v.version}.relman")
        self.run_dialog(ExportDialog(v.ref, default, own, self.window, create_key=self.create_key),
                        lambda vals: self.export_bundle(vals["ref"], vals["path"], key=vals["key"]))

    def create_key(self, name: str) -> str:
        """A new signing key pair (as `relman keys create NAME`); returns its name."""
        from relman.app.bundles import create_key

        made = create_key(name)
        self.info(f"Created signing key {made['name']} (id {made['id']}); its public key is {made['public_key']} "
                  f"(for relman imports) and {made['openssf_public_key']} (for OpenSSF 'model_signing verify key')")
        return made["name"]

    def export_bundle(self, ref: str, path: str, key: str | None = None) -> int:
        from relman.app.background import queue_export_bundle
        from relman.units import human_size

        job = queue_export_bundle(self.catalog, ref, path, key=key)

        def done(row: dict[str, Any]) -> None:
            r = row["result"]
            size = f", {human_size(int(r['bytes']))}" if isinstance(r.get("bytes"), int) else ""
            self.info(f"Exported {ref} to {r.get('path', path)}: {r.get('files', '?')} files{size}, signed with "
                      f"key {r.get('key_name', '?')} (id {r.get('key_id', '?')})")
        return self.window.job_actions.track(job, f"Export {ref}", done)

    def action_import_bundle(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.window, "Import release bundle", "",
                                              "relman bundles (*.relman *.tar);;All files (*)")
        if path:
            self.import_bundle(path)

    def import_bundle(self, path: str) -> int:
        from relman.app.background import queue_import_bundle

        job = queue_import_bundle(self.catalog, path)

        def done(row: dict[str, Any]) -> None:
            r = row["result"]
            self.info(f"Imported {r.get('ref') or Path(path).name} from the bundle")
            self.window.refresh(force=True)
        return self.window.job_actions.track(job, f"Import bundle {Path(path).name}", done)

    def action_model_card(self) -> None:
        from relman.app.release import version_of
        from relman.release.modelcard import CARD_FIELDS, card_fields
        from relman.ui.qt_export import CardDialog

        v = self.selected_or_error("write its model card")[0]
        fields = card_fields(self.catalog, version_of(self.catalog, v.ref))
        default = str(Path.home() / f"{v.model}-{v.version}-README.md")
        self.run_dialog(CardDialog(v.ref, fields, CARD_FIELDS, default, self.window),
                        lambda vals: self.save_card(**vals))

    def save_card(self, ref: str, fields: dict[str, str], path: str | None = None) -> dict[str, str]:
        """Store the changed card fields (as `relman card --set`) and, with a path, write the card."""
        from relman.app.bundles import set_card_fields
        from relman.app.release import version_of
        from relman.release.modelcard import card_fields

        old = card_fields(self.catalog, version_of(self.catalog, ref))
        changed = {k: v for k, v in fields.items() if v != old.get(k, "")}
        out = set_card_fields(self.catalog, ref, changed) if changed else old
        if path:
            self.write_model_card(ref, path)
        elif changed:
            self.info(f"Model card of {ref}: saved {', '.join(k.replace('_', ' ') for k in sorted(changed))}")
        return out

    def write_model_card(self, ref: str, path: str) -> Path:
        from relman.app.bundles import write_model_card

        out = write_model_card(self.catalog, ref, Path(path))
        self.info(f"Model card for {ref} written to {out or path}")
        return out
