"""Tabular privatization: bundled table or uploaded CSV -> schema -> kept columns -> mechanism -> release."""

import pandas as pd
import streamlit as st

from cadp import compare, hub, ui
from cadp.data import TABULAR_DATASETS, category_texts, infer_column_kind, table_fit_problems, text_category_columns
from cadp.errors import InputError
from cadp.privatize import privatize, public_training_data
from cadp.train import check_fittable, fit_here_caution, held_out_rows_note

RESULT = "table_result"
SHOWN_ROWS = 200


def choose_table(loaded):
    """(frame, name, key of the table (its bytes), default conditions, CSV format of a download) or None."""
    options = ["Upload a CSV"]
    # a model of a user's CSV has none; a Hub model's split is its publisher's word: its "held-out rows" unknown
    if loaded is not None and loaded.config.dataset in TABULAR_DATASETS and public_training_data(loaded.model):
        options.insert(0, f"Bundled table ({loaded.config.dataset})")
    source = st.radio("Input", options, horizontal=True, key=ui.kept("table_source"))
    if source != "Upload a CSV":
        table, held_out, trained = ui.bundled_table(loaded.config.dataset, loaded.config.permutation_seed,
                                                    tuple(loaded.config.condition_columns))
        data = held_out.to_csv(index=False).encode()
        st.caption(held_out_rows_note(table, len(held_out), trained, ui.literal(loaded.config.name)))
        return (held_out, f"{table.name} (held-out rows)", ui.record_key(data), list(loaded.config.condition_columns),
                {})
    uploads = ui.kept_uploads("CSV file (header row; comma, semicolon or tab separated)", "table_upload",
                              derived=(RESULT, "table_fitted", *ui.TABLE_UPLOAD_DERIVED), type=["csv", "tsv", "txt"])
    if not uploads:
        st.info("Upload a CSV to start.")
        return None
    upload = uploads[0]
    data = upload.getvalue()
    read_csv_upload = ui.require("read_csv_upload", "cadp.uploads")
    # a table model's text categories are read as written: codes 02134 or 250.00 are not the numbers 2134, 250.0
    text_columns = text_category_columns(loaded.config) if loaded is not None else set()
    numbers = set(loaded.config.data_columns + loaded.config.condition_columns) - text_columns if loaded else ()
    csv = read_csv_upload(data, text_columns=text_columns, number_columns=numbers)
    for note in csv.notes:
        st.caption(f"Note: {note}")
    defaults = [c for c in loaded.config.condition_columns if c in csv.frame.columns] if loaded is not None else []
    return csv.frame, upload.name, ui.record_key(data), defaults, csv.csv_format


def choose_schema(frame: pd.DataFrame, identity: str, model_kinds: dict[str, str]) -> dict[str, str]:
    """Column kinds: the chosen model's for its columns (a few rows cannot tell a number from a category), else
    inferred; editable."""
    inferred = [model_kinds.get(c) or infer_column_kind(frame[c]) for c in frame.columns]
    schema = pd.DataFrame({"column": list(frame.columns), "inferred": inferred, "type": inferred})
    edited = ui.kept_editor(schema, f"table_schema_{identity}", "type", disabled=["column", "inferred"],
                            hide_index=True, column_config={"type": st.column_config.SelectboxColumn(
                                "type", options=["numeric", "categorical"], required=True)})
    return dict(zip(edited["column"], edited["type"]))


def fit_problem(frame, conditions, kinds, fit_key) -> str | None:
    """Why no model can be fitted on ``frame`` with these conditions and column kinds (``train.check_fittable``: its
    encoders cannot be built, too few rows, no two different rows sharing conditions), or None; checked once per
    table and choices (about 0.5 s for 100,000 rows), not on every rerun."""
    checked = st.session_state.get("table_fit_check")
    if checked is None or checked[0] != fit_key:
        try:
            check_fittable(frame, conditions, kinds=kinds)
            checked = (fit_key, None)
        except InputError as error:
            checked = (fit_key, str(error))
        st.session_state["table_fit_check"] = checked
    return checked[1]


def model_for(loaded, frame, conditions, kinds, key, name):
    """The bundled model when the table fits it, else a model fitted on the fly (form + progress)."""
    problems = []
    if loaded is not None:
        config = loaded.config
        # where the table itself does not fit, the page leaves the conditions unchosen: its problems, not that one
        problems = table_fit_problems(config, frame, kinds, list(config.condition_columns)) or \
            table_fit_problems(config, frame, kinds, conditions)
        if not problems:
            st.success(f"The table fits the model {ui.literal(config.name)}: using it.")
            caution = ui.training_rows_caution(loaded, frame, key, name,
                                               uploaded=st.session_state.get("table_source") == "Upload a CSV")
            if caution:
                st.warning(caution)
            notes = ui.input_notes(key, loaded.origin, loaded.model, frame)
            if notes:  # said before a release is made (and charged), not only after
                st.info("A release of this table as it is: " + "; ".join(notes) + ".")
            return loaded.model
    fit_key = (key, tuple(conditions), tuple(sorted(kinds.items())))
    unfittable = fit_problem(frame, conditions, kinds, fit_key)
    if unfittable:  # (a numeric column of text: a press of Fit could only fail)
        st.error(("This table does not match the chosen model (" + "; ".join(problems) + "), and " if problems
                  else "") + f"no model can be fitted on it here as it is: {unfittable}.")
        return None
    st.warning(fit_here_caution(problems, model_loaded=loaded is not None))
    with st.form("table_fit"):
        steps = st.slider("Training steps", 100, 3000, 400, 100, key=ui.kept("table_steps"))
        submitted = st.form_submit_button("Fit a model on this table")
    if submitted:
        bar = st.progress(0.0, text="Fitting…")

        def report(share, loss):
            bar.progress(min(float(share), 1.0), text=f"Fitting… loss {loss:.3f}")

        try:
            ui.fitted_model((*fit_key, steps), frame, report)
        finally:  # a fit that fails leaves its error, not a bar frozen at "Fitting…"
            bar.empty()
        st.session_state["table_fitted"] = (*fit_key, steps)
    fitted = st.session_state.get("table_fitted")
    if fitted is None or fitted[:3] != fit_key:
        st.info("Fit a model to continue.")
        return None
    model = ui.fitted_model(fitted, frame)
    if getattr(model, "fit_record", {}).get("kept"):  # the later steps ran, and are not in the model
        st.caption(model.fit_record["kept"])
    if getattr(model, "fit_record", {}).get("stopped"):
        st.info(model.fit_record["stopped"])
    return model


def show_result(state) -> None:
    result = state["result"]
    original, released = result.original_frame, result.privatized_frame
    st.markdown("**Guarantee of this release**")
    st.info(result.guarantee if state.get("caution") is None else f"Caution: {state['caution']}\n\n{result.guarantee}")
    if state.get("repeats"):
        st.warning(state["repeats"])
    ui.release_facts(result)
    for note in result.notes:  # cells read as the training mean, columns left out
        st.caption(f"Note: {note}")
    shown = min(len(original), SHOWN_ROWS)
    first = "" if shown == len(original) else f" (first {shown} rows; the download has all {len(original):,})"
    left, right = st.columns(2)
    left.markdown("Original" + first)
    left.dataframe(original.head(shown), key="table_original")
    right.markdown(f"Privatized{first}")  # as short as its neighbour's: the two tables start level
    right.dataframe(compare.highlighted_changes(original.head(shown), released.head(shown)), key="table_released")
    changed = compare.changed_counts_words(compare.changed_cells(original.head(shown), released.head(shown)))
    right.caption(f"Changed cells highlighted (changed cells per column: {ui.markdown_literal(changed)}); numbers stay "
                  "within the range of the table the model was fitted on.")
    # the downloads before the comparisons below, so that nothing a comparison meets can hide them
    if "written" not in state:  # once per release; rows in an order drawn at random
        rows, state["order_note"] = compare.download_rows(released, state["seed"])
        state["written"] = ui.require("release_csv", "cadp.uploads")(rows, state["csv_format"], state["texts"])
    data, words, changed, escaped = state["written"]
    order_note = state["order_note"]
    left, right = st.columns(2)
    tag = state.get("tag", "not-private")  # (a release kept from before the tag: said to be none, never more)
    left.download_button("Download privatized CSV", data, file_name=f"cadp-privatized-{tag}.csv", mime="text/csv",
                         on_click="ignore", key="download_csv")
    release_id = state.setdefault("release_id", compare.new_release_id())  # (the file's address is its bytes' hash)
    right.download_button("Download its terms (guarantee.txt)", "\n\n".join(
        [ui.release_terms(result), order_note] + ([escaped] if escaped else [])
        + [compare.release_id_line(release_id)]) + "\n",
                          file_name=f"cadp-privatized-{tag}-guarantee.txt", mime="text/plain", on_click="ignore",
                          key="download_terms")
    st.caption(order_note)
    if escaped is not None:  # kept conditions are released exactly: the one change a download makes is said
        st.caption(escaped)
    if changed is not None:
        st.caption(f"Written {words}: {changed}.")
    elif words != "comma-separated":
        st.caption(f"Written {words}, as the upload was.")
    column = st.selectbox("Distribution of", list(original.columns), key=ui.kept("table_distribution_column"))
    st.plotly_chart(compare.distribution_figure(original, released, column), key="table_histogram")
    if "correlation" not in state:  # once per release, not on every rerun of the page
        state["correlation"] = compare.correlation_or_reason(original, released)
    difference = state["correlation"]
    if isinstance(difference, str):
        st.caption(difference)
    else:
        st.plotly_chart(compare.correlation_figure(difference), key="table_correlation")
    targets, default = compare.task_columns(original, dict(state["choices"][0]), dict(state["choices"][1]))
    if targets:
        target = st.selectbox("Downstream task: predict", targets, index=default, key=ui.kept("table_target"))
        scores = state.setdefault("accuracy", {})  # per target, once per release
        if target not in scores:
            scores[target] = compare.downstream_check(original, released, target)
        accuracy = scores[target]
        if isinstance(accuracy, str):
            st.caption(accuracy)
            return
        cols = st.columns(3)
        # the p/o or o/o first: a narrow column cuts a label's end
        cols[0].metric("p/o: trained on privatized, tested on real", f"{accuracy['p/o']:.3f}",
                       help="This release: a classifier trained on the privatized rows, tested on real rows")
        cols[1].metric("o/o: trained on real, tested on real", f"{accuracy['o/o']:.3f}",
                       help="This release's rows as they were: a classifier trained and tested on real rows")
        cols[2].metric("majority class", f"{accuracy['chance']:.3f}")
        no_evaluation = state.get("no_evaluation")  # a model fitted here, or one without eval.json: none to point to
        st.caption(compare.downstream_words(accuracy, no_evaluation))
        handling = dict(state["choices"][1]).get(target)
        if getattr(handling, "handling", None) == "kept":
            st.caption(compare.kept_target_words(target, no_evaluation))
    else:
        st.caption(compare.no_task_reason(original))


def no_evaluation(loaded, bundled: bool) -> str | None:
    """Why the release's model has no evaluation of its releases to point to (a model fitted here, or a folder
    without a utility section in its eval.json), or None where it has one."""
    if not bundled:
        return compare.FITTED_HERE_UNEVALUATED
    try:
        evaluation, other_weights = hub.current_eval(loaded.folder)
    except Exception:  # noqa: BLE001 - an unreadable eval.json is no evaluation to point to
        evaluation, other_weights = {}, []
    command = ui.evaluate_command(loaded, "utility")  # (the model's own, not a FOLDER placeholder)
    if "utility" in other_weights:
        return compare.with_command(compare.EVALUATED_OTHER_WEIGHTS, command)
    utility = evaluation.get("utility")
    return None if isinstance(utility, dict) and utility.get("methods") else \
        compare.with_command(compare.NOT_EVALUATED, command)


def page(loaded) -> None:
    named = st.empty()  # the model releases are made with: the sidebar's, until a model fitted here takes its place
    if loaded is not None:
        named.caption(ui.model_line(loaded))
    st.header("1 · Table")
    chosen = choose_table(loaded)
    if chosen is None:
        return
    frame, name, key, default_conditions, csv_format = chosen
    # another table or model: widgets of its own, so each starts from its schema and default conditions (a keyed
    # multiselect keeps its value in the browser when only its options change)
    identity = ui.record_key(repr((key, tuple(default_conditions))).encode())
    with st.expander("Schema (inferred column types; change them if needed)"):
        kinds = choose_schema(frame, identity, {} if loaded is None else loaded.config.column_kinds)
    st.header("2 · Condition columns (kept, randomized or resampled)")
    categorical = [c for c in frame.columns if kinds[c] == "categorical"]
    # the model's conditions come pre-chosen only where the table fits the model: else a model fitted here would
    # release exactly a column the user never chose
    fits = bool(default_conditions) and not table_fit_problems(loaded.config, frame, kinds, default_conditions)
    conditions = st.multiselect("Columns released as conditions (must be categorical)", categorical,
                                default=[c for c in default_conditions if c in categorical] if fits else [],
                                key=ui.kept(f"table_conditions_{identity}"))
    if not categorical:  # (sklearn's scaled diabetes table writes sex as -0.0446 and 0.0507: numbers)
        few = [str(c) for c in frame.columns if frame[c].nunique() <= 10]
        st.info("No column of this table is categorical in the Schema above, so none can be kept, randomized or "
                "resampled: every column is released through the noise."
                + (f" {ui.markdown_literal(', '.join(few[:5]))} {'has' if len(few) == 1 else 'have'} 10 or fewer "
                   "distinct values: if a column holds categories written as numbers, set it to categorical in the "
                   "Schema above." if few else " Set a column to categorical in the Schema above to release it as "
                   "a condition."))
    handlings = {c: ui.condition_handling_controls(c, f"table_{c}") for c in conditions}
    model = model_for(loaded, frame, conditions, kinds, key, name)
    if model is None:
        return
    if loaded is None or model is not loaded.model:
        named.caption(ui.model_line(loaded, fitted=model))
    st.header("3 · Privacy")
    settings = ui.privacy_controls(model.config, "table", default_epsilon=2, image=False,
                                   label_kept=all(h.handling == "kept" for h in handlings.values()),
                                   publisher=ui.stated_by(model))
    if loaded is not None and model is loaded.model:  # its evaluation says nothing about a model fitted here
        ui.evaluation_preview(loaded, settings, "table",
                              conditions_kept=all(h.handling == "kept" for h in handlings.values()),
                              release_batch=len(frame))
    # a release is shown with the table and the model it was made of (another model: not shown)
    made_of = (key, model.config.name, loaded.origin if loaded is not None and model is loaded.model
               else ("fitted here", st.session_state.get("table_fitted")))  # which fit: steps included
    choices = (tuple(sorted(kinds.items())), tuple(handlings.items()), settings.summary)
    cost = ui.cost_text([settings.mechanism], sum(h.cost for h in handlings.values()))
    modelled = [c for c in model.config.data_columns + model.config.condition_columns if c in frame.columns]
    row_keys = ui.table_row_keys(key, frame[modelled])
    repeats = compare.repeated_rows_note(row_keys, cost, released=False, formal=settings.mechanism.formal)
    if repeats:  # said before a release is made (and charged), not only after
        st.warning(repeats)
    # a row released through another model's columns has other keys: the ledger's line adds them up, so does this
    whole_keys = ui.table_row_keys(key, frame)  # each row over all its columns: the same row through other models
    before = ui.released_before_note(row_keys, "row", ui.table_rows_keys(key, row_keys, whole_keys))
    if before:  # the same rows uploaded again (another file, another encoding): said before the press too
        st.warning(before)
    if st.button("Privatize table", type="primary", key="table_privatize"):
        with st.spinner("Privatizing…"):
            result = privatize(model, frame, None, settings.mechanism, seed=settings.seed,
                               condition_handling=handlings, reconstruct=False)
        bundled = loaded is not None and model is loaded.model  # a model fitted here: its guarantee says so
        # the texts a release of this model can hold: the download's encoding follows them, not this draw's cells
        texts = category_texts(model.config)
        state = {"result": result, "made_of": made_of, "choices": choices, "csv_format": csv_format, "texts": texts,
                 "seed": settings.seed, "no_evaluation": no_evaluation(loaded, bundled),
                 # the download's name says its terms (a CSV holds no metadata to carry them)
                 "tag": compare.release_tag(settings.mechanism, seeded=settings.seed is not None),
                 "caution": ui.training_rows_caution(loaded, frame, key, name,
                                                     uploaded=st.session_state.get("table_source") == "Upload a CSV")
                 if bundled else None}
        # charged once everything is made, just before the page keeps it: a press that a second press cuts short
        # (Streamlit stops a run at its next element) releases nothing, and was charged for what it computed
        keys = ui.charge_rows(key, name, result.original_frame, settings.mechanism,
                              sum(h.cost for h in handlings.values()), seeded=settings.seed is not None,
                              whole=whole_keys, model=ui.latent_space(loaded if bundled else None,
                                                                      st.session_state.get("table_fitted")))
        state["repeats"] = compare.repeated_rows_note(keys, cost, released=True, formal=settings.mechanism.formal)
        st.session_state[RESULT] = state
    state = st.session_state.get(RESULT)
    if state is not None and state["made_of"] == made_of:
        st.header("4 · Release")
        if state["choices"] != choices:
            st.info("The conditions, their handling or the privacy settings changed since this release: what is "
                    "shown is the release made before. Press **Privatize table** to release with the current "
                    "choices.")
        show_result(state)


ui.run_page("Tabular privatization", page, "tabular", needs_model=False, names_model=False)
