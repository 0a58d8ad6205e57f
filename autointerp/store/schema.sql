-- autointerp store schema. The one place where the tables are written down.
-- Bump SCHEMA_VERSION in store/base.py and add a migration there when this changes.
-- Conventions: model_id is the model spec as given (e.g. 'smollm2-135m'); unit is a unit id
-- ('L5/N131', 'L9/H9'); hook names follow blocks.{L}.mlp.post etc.; blobs are little-endian
-- packed arrays (float16 activations, int32 token ids); *_json columns hold JSON text;
-- `key` columns are content hashes of everything that determines a row, so a re-run with
-- identical inputs finds its row instead of writing a second one.

-- the store's own facts: app id and schema version
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);

-- subject models (and the sizes that unit ids are checked against)
CREATE TABLE IF NOT EXISTS models (
    id          TEXT PRIMARY KEY,
    family      TEXT NOT NULL,
    n_layers    INTEGER NOT NULL,
    d_model     INTEGER NOT NULL,
    n_heads     INTEGER NOT NULL,
    n_kv_heads  INTEGER NOT NULL,
    d_head      INTEGER NOT NULL,
    d_mlp       INTEGER NOT NULL,
    vocab_size  INTEGER NOT NULL,
    created_at  TEXT NOT NULL
);

-- a text source, tokenised into fixed-length contexts by one model's tokenizer
CREATE TABLE IF NOT EXISTS corpora (
    id          TEXT PRIMARY KEY,          -- hash of (source, model tokenizer, context layout)
    name        TEXT NOT NULL,             -- e.g. 'gensim-wiki', a file path, an HF dataset name
    model_id    TEXT NOT NULL REFERENCES models(id),
    context_len INTEGER NOT NULL,
    n_contexts  INTEGER NOT NULL,          -- contexts stored so far (a deterministic prefix; longer mines extend it)
    settings_json TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS contexts (
    corpus_id   TEXT NOT NULL REFERENCES corpora(id),
    idx         INTEGER NOT NULL,
    token_ids   BLOB NOT NULL,             -- int32 packed, every position the model saw (BOS included)
    tokens_json TEXT NOT NULL,             -- the decoded tokens of the text positions (from first_pos on, so aligned
                                           -- with records.acts); later stages need no tokenizer
    PRIMARY KEY (corpus_id, idx)
);

-- one mining pass of a model over a corpus (resumable: n_done contexts are mined)
CREATE TABLE IF NOT EXISTS mining_runs (
    id          TEXT PRIMARY KEY,          -- hash of (model, corpus, layers, settings)
    model_id    TEXT NOT NULL REFERENCES models(id),
    corpus_id   TEXT NOT NULL REFERENCES corpora(id),
    settings_json TEXT NOT NULL,
    n_done      INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL DEFAULT 'running',   -- running | done | failed (a rerun resumes it) | shard (a corpus shard, merged by `merge`)
    state_path  TEXT,                      -- checkpoint of the running top-k state
    stats_json  TEXT,                      -- when done: tokens, seconds, tokens/s
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS mining_runs_model ON mining_runs(model_id, status);

-- per-unit statistics of a mining run, and per-unit facts of the model (direct logit effect)
CREATE TABLE IF NOT EXISTS unit_stats (
    run_id      TEXT NOT NULL REFERENCES mining_runs(id),
    unit        TEXT NOT NULL,
    layer       INTEGER NOT NULL,
    max_act     REAL, mean_act REAL, std_act REAL, frac_active REAL,
    hist_json   TEXT,
    PRIMARY KEY (run_id, unit)
);

CREATE TABLE IF NOT EXISTS unit_logits (
    model_id    TEXT NOT NULL REFERENCES models(id),
    unit        TEXT NOT NULL,
    promoted_json   TEXT NOT NULL,         -- [[token, weight], ...] most promoted first
    suppressed_json TEXT NOT NULL,
    PRIMARY KEY (model_id, unit)
);

-- an activation record: one context with one unit's per-token activations
CREATE TABLE IF NOT EXISTS records (
    id          INTEGER PRIMARY KEY,
    run_id      TEXT NOT NULL REFERENCES mining_runs(id),
    unit        TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- top | quantile | random | top_attn | probe
    bin         INTEGER NOT NULL DEFAULT 0,-- quantile bin; rank for top / top_attn; 0 for random
    ctx_idx     INTEGER NOT NULL,
    max_act     REAL NOT NULL,
    acts        BLOB NOT NULL,             -- float16 packed, one per text token (aligned with contexts.tokens_json;
                                           -- mining_runs.settings_json.first_pos = 1 when a BOS was prepended)
    extra       BLOB,                      -- e.g. attention pattern row of the peak query position over the text key
                                           -- positions (float16; attention to the BOS = 1 - sum)
    UNIQUE (run_id, unit, kind, bin, ctx_idx)
);
-- (the UNIQUE index above also serves lookups by (run_id, unit, kind): no second index to update per insert)

-- explanations of subjects (LLM-written, or the non-LLM baseline: explainer='baseline'). A subject
-- (core/subjects.py) is a unit of one model (model_id, unit, layer; run_id: the mining run of its
-- records), or one side of a model diff (diff_id, side; schema v5: before, diff_explanations)
CREATE TABLE IF NOT EXISTS explanations (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    model_id    TEXT REFERENCES models(id),
    unit        TEXT,
    layer       INTEGER,
    run_id      TEXT REFERENCES mining_runs(id),
    explainer   TEXT NOT NULL,             -- LLM model name, or 'baseline'
    method      TEXT NOT NULL,             -- e.g. 'completion-bestof3', 'chat', 'baseline'
    text        TEXT NOT NULL,
    template    TEXT, template_hash TEXT, records_hash TEXT,
    settings_json TEXT,
    created_at  TEXT NOT NULL,
    diff_id     TEXT REFERENCES diffs(id), -- a diff side's explanation (schema v5)
    side        TEXT,                      -- which model's advantage it explains: b_better | a_better
    CHECK ((diff_id IS NULL AND side IS NULL AND model_id IS NOT NULL AND unit IS NOT NULL AND layer IS NOT NULL) OR (diff_id IS NOT NULL AND side IS NOT NULL AND model_id IS NULL AND unit IS NULL AND layer IS NULL))   -- a unit's row or a diff side's, never both nor neither
);
CREATE INDEX IF NOT EXISTS explanations_unit ON explanations(model_id, unit);
CREATE INDEX IF NOT EXISTS explanations_layer ON explanations(model_id, layer);   -- query --layer at a million units
CREATE INDEX IF NOT EXISTS explanations_diff ON explanations(diff_id, side);

-- scores of explanations: one row per score kind (the scorers' of score/registry.py, and validate's), with interval, control and margin
CREATE TABLE IF NOT EXISTS scores (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    explanation_id INTEGER NOT NULL REFERENCES explanations(id),
    kind        TEXT NOT NULL,             -- simulation | simulation_top | simulation_random | detection | fuzzing | probe_auc | intervention ...
    value       REAL,
    ci_low      REAL, ci_high REAL,
    n           INTEGER,
    scorer      TEXT,                      -- simulator / judge model
    template_hash TEXT,
    details_json TEXT,                     -- per-record values, simulated activations, probes
    created_at  TEXT NOT NULL,
    control     REAL,                      -- the same scorer on the same records with a mismatched explanation
    margin      REAL, margin_low REAL, margin_high REAL,   -- value - control, paired bootstrap 95% interval
    reason      TEXT                       -- why value is NULL (constant judge, unparseable, ...)
);
CREATE INDEX IF NOT EXISTS scores_expl ON scores(explanation_id, kind);
-- covering: each explanation's best simulation score without reading the table (`stats` at a
-- million units); made at the first writable open of an older store, so no schema version
CREATE INDEX IF NOT EXISTS scores_best ON scores(kind, explanation_id, value, margin);

-- LLM calls and the response cache
CREATE TABLE IF NOT EXISTS llm_calls (
    id          INTEGER PRIMARY KEY,
    backend     TEXT NOT NULL, model TEXT NOT NULL,
    kind        TEXT NOT NULL,             -- chat | complete | logprobs | structured
    template    TEXT, template_hash TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER,
    latency_s   REAL, cost_usd REAL,
    cache_hit   INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS llm_cache (
    key         TEXT PRIMARY KEY,          -- hash of (backend, model, request, params, seed)
    backend     TEXT NOT NULL, model TEXT NOT NULL,
    response_json TEXT NOT NULL,
    created_at  TEXT NOT NULL
);

-- counterfactual datasets for patching
CREATE TABLE IF NOT EXISTS datasets (
    name        TEXT PRIMARY KEY,
    task        TEXT NOT NULL,
    source      TEXT NOT NULL,             -- builtin | llm | import
    model_id    TEXT,                      -- the model it was validated on
    n_items     INTEGER NOT NULL,
    hash        TEXT,                      -- content hash of the items (part of patch run keys)
    stats_json  TEXT,                      -- acceptance counts per rejection reason
    settings_json TEXT,                    -- how it was made (seed, margin, LLM, templates)
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS pairs (
    dataset     TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    clean       TEXT NOT NULL, corrupt TEXT NOT NULL,
    answer      TEXT NOT NULL, wrong TEXT NOT NULL,
    clean_logit_diff REAL, corrupt_logit_diff REAL,
    meta_json   TEXT,
    PRIMARY KEY (dataset, idx)
);

-- patching runs and their per-component results
CREATE TABLE IF NOT EXISTS patch_runs (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    dataset     TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
    model_id    TEXT NOT NULL REFERENCES models(id),
    what        TEXT NOT NULL,             -- resid | heads | heads_pos | mlp | attn | neurons | path | dla_heads | dla_neurons
    method      TEXT NOT NULL,             -- activation | attribution | path | dla
    direction   TEXT,                      -- denoising | noising
    clean_logit_diff REAL, corrupt_logit_diff REAL,
    settings_json TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS patch_results (
    run_id      INTEGER NOT NULL REFERENCES patch_runs(id) ON DELETE CASCADE,
    component   TEXT NOT NULL,             -- unit id ('L9/H9', 'L3/N42') or hook name ('blocks.3.mlp.out')
    layer       INTEGER,
    position    INTEGER NOT NULL DEFAULT -1,  -- -1: all positions
    effect      REAL NOT NULL,
    PRIMARY KEY (run_id, component, position)
);

-- the head wiki: detector scores per head
CREATE TABLE IF NOT EXISTS head_scores (
    model_id    TEXT NOT NULL REFERENCES models(id),
    unit        TEXT NOT NULL,
    detector    TEXT NOT NULL,             -- induction | previous_token | duplicate_token | first_token
    score       REAL NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (model_id, unit, detector)
);

-- batch jobs: one row per (unit, stage) keyed by a hash of what determines its result
CREATE TABLE IF NOT EXISTS jobs (
    key         TEXT PRIMARY KEY,
    model_id    TEXT NOT NULL,
    unit        TEXT NOT NULL,
    stage       TEXT NOT NULL,             -- explain | validate
    status      TEXT NOT NULL DEFAULT 'pending',   -- pending | running | done | failed
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    claimed_by  TEXT, claimed_at TEXT,
    result_id   INTEGER,
    created_at  TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(model_id, stage, status);

-- investigations (`autointerp investigate`): one row per (task, dataset, model, settings); its
-- steps are keyed by a content hash of their inputs, so a re-run reuses every step whose inputs
-- did not change (and a killed run resumes at the first step not done)
CREATE TABLE IF NOT EXISTS investigations (
    id          TEXT PRIMARY KEY,          -- hash of (task, dataset, model, settings)
    task        TEXT NOT NULL,
    model_id    TEXT NOT NULL,
    dataset     TEXT,                      -- datasets.name once the dataset step is done
    settings_json TEXT,
    status      TEXT NOT NULL DEFAULT 'running',   -- running | done | failed
    error       TEXT,
    summary_json TEXT,                     -- the measured numbers the report is written from
    report_md   TEXT,                      -- the Markdown report (figures referenced by file name)
    out_dir     TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS investigation_steps (
    investigation_id TEXT NOT NULL REFERENCES investigations(id) ON DELETE CASCADE,
    step        TEXT NOT NULL,             -- dataset | localise | confirm | paths | heads | neurons | hypothesis | backup | prose
    key         TEXT NOT NULL,             -- hash of (step, version, inputs)
    result_json TEXT NOT NULL,
    seconds     REAL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (investigation_id, step)
);
CREATE INDEX IF NOT EXISTS investigation_steps_key ON investigation_steps(key);

CREATE TABLE IF NOT EXISTS investigation_figures (
    investigation_id TEXT NOT NULL REFERENCES investigations(id) ON DELETE CASCADE,
    name        TEXT NOT NULL,             -- file name in the report folder, e.g. circuit.png
    caption     TEXT,
    source_json TEXT,                      -- the store rows it was drawn from: {"table", "ids", "sql"}
    png         BLOB NOT NULL,
    PRIMARY KEY (investigation_id, name)
);

-- scorer calibrations on planted units (autointerp calibrate): one row per LLM/templates/settings
CREATE TABLE IF NOT EXISTS calibrations (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    llm         TEXT NOT NULL,             -- the simulator/judge LLM ('exact' rows are in results)
    model_id    TEXT NOT NULL,             -- the subject tokenizer / corpus the units were mined with
    corpus      TEXT NOT NULL,
    templates_json TEXT,                   -- template name -> hash
    settings_json TEXT,
    results_json TEXT NOT NULL,            -- per scorer: AUROC, interval, per-unit scores
    created_at  TEXT NOT NULL
);

-- sparse autoencoders and transcoders (SAELens format) whose latents are units L<layer>/F<i>@<name>;
-- several SAEs on one model share a store. id: content hash of cfg.json and the weights file.
CREATE TABLE IF NOT EXISTS saes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,             -- the SAE part of its unit ids (L6/F12@name); a transcoder set
                                           -- shares one name across its layers (unique per layer, schema v4)
    model_id    TEXT NOT NULL REFERENCES models(id),
    hook        TEXT NOT NULL,             -- the hook point read, e.g. blocks.6.resid_post (transcoders: blocks.6.mlp.in)
    hook_out    TEXT,                      -- transcoders: the hook point predicted (blocks.6.mlp.out)
    layer       INTEGER NOT NULL,
    architecture TEXT NOT NULL,            -- standard | jumprelu | topk | transcoder | jumprelu_transcoder | skip_transcoder
    d_in        INTEGER NOT NULL,
    d_sae       INTEGER NOT NULL,
    normalisation TEXT NOT NULL,           -- cfg normalize_activations
    path        TEXT,                      -- where it was loaded from (so --sae NAME finds it again)
    cfg_json    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (name, layer)
);

-- edge-level circuits (autointerp circuit): one row per discovery run, keyed by a hash of its inputs
CREATE TABLE IF NOT EXISTS circuits (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    dataset     TEXT NOT NULL REFERENCES datasets(name) ON DELETE CASCADE,
    model_id    TEXT NOT NULL REFERENCES models(id),
    method      TEXT NOT NULL,             -- eap | eap-ig | acdc
    ablation    TEXT NOT NULL DEFAULT 'corrupt',  -- edges outside the circuit patched to: corrupt | mean (schema v3)
    target      REAL,                      -- faithfulness target (eap, eap-ig)
    faithfulness REAL,                     -- measured by running the circuit (edges outside it ablated)
    clean_logit_diff REAL, corrupt_logit_diff REAL,
    n_items     INTEGER NOT NULL,
    n_edges     INTEGER NOT NULL,          -- in the circuit
    n_edges_total INTEGER NOT NULL,        -- in the model's graph
    curve_json  TEXT,                      -- [[n edges, faithfulness], ...] measured
    settings_json TEXT,
    created_at  TEXT NOT NULL
);

-- every scored edge of a circuit run: 'L0/H0 -> L1/H0:k', its score (normalised noising effect)
CREATE TABLE IF NOT EXISTS circuit_edges (
    circuit_id  INTEGER NOT NULL REFERENCES circuits(id) ON DELETE CASCADE,
    edge        TEXT NOT NULL,
    sender      TEXT NOT NULL,             -- embed | L3/H1 | blocks.3.mlp.out
    receiver    TEXT NOT NULL,             -- L4/H2:q|k|v | blocks.4.mlp.out (its input) | logits
    score       REAL,
    in_circuit  INTEGER NOT NULL DEFAULT 0,
    rank        INTEGER,                   -- 0 = most important edge of the circuit
    PRIMARY KEY (circuit_id, edge)
);
CREATE INDEX IF NOT EXISTS circuit_edges_in ON circuit_edges(circuit_id, in_circuit, rank);

-- model diffs (`autointerp diff A B`): one row per (A, B, corpus, settings); its top differing
-- contexts, ranked components and task comparisons. The explanations of a side's contexts and
-- their scores are in explanations/scores (diff_id, side)
CREATE TABLE IF NOT EXISTS diffs (
    id          TEXT PRIMARY KEY,          -- hash of (A, B, corpus, settings)
    model_a     TEXT NOT NULL,
    model_b     TEXT NOT NULL,
    mode        TEXT NOT NULL,             -- token (same tokenizer) | span (character spans)
    level       TEXT NOT NULL,             -- blackbox | components
    corpus      TEXT,
    n_tokens    INTEGER,
    settings_json TEXT,
    summary_json TEXT,                     -- metrics (mean Δ log p, Δ p, Δ clipped log p, KL), rankings' heads
    status      TEXT NOT NULL DEFAULT 'done',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS diff_contexts (
    diff_id     TEXT NOT NULL REFERENCES diffs(id) ON DELETE CASCADE,
    side        TEXT NOT NULL,             -- b_better | a_better | random
    rank        INTEGER NOT NULL,
    ctx_idx     INTEGER NOT NULL,
    score       REAL,                      -- the context's largest value of the metric, towards the side
    tokens_json TEXT NOT NULL,             -- tokens (or spans) of the context
    values_json TEXT NOT NULL,             -- per token: Δ logp, Δ p, Δ clip, lp_a, lp_b (and kl), all B - A
    input_ids_json TEXT,
    PRIMARY KEY (diff_id, side, rank)
);

CREATE TABLE IF NOT EXISTS diff_components (
    diff_id     TEXT NOT NULL REFERENCES diffs(id) ON DELETE CASCADE,
    analysis    TEXT NOT NULL,             -- weight_tensor | weight_head | weight_neuron | attn_js | head_out | neuron_corr | dla | patching
    rank        INTEGER NOT NULL,
    component   TEXT NOT NULL,             -- a unit id, a hook name or a parameter name
    layer       INTEGER,
    value       REAL,
    details_json TEXT,
    PRIMARY KEY (diff_id, analysis, rank)
);

CREATE TABLE IF NOT EXISTS diff_tasks (
    diff_id     TEXT NOT NULL REFERENCES diffs(id) ON DELETE CASCADE,
    task        TEXT NOT NULL,
    n_items     INTEGER NOT NULL,
    logit_diff_a REAL, logit_diff_b REAL,
    accuracy_a  REAL, accuracy_b REAL,
    outliers_json TEXT,                    -- the items with the largest |LD_B - LD_A|
    PRIMARY KEY (diff_id, task)
);

-- attribution graphs over transcoder latents (`autointerp graph`, schema v4): one row per prompt
-- and settings; its nodes (all, with the pruning's verdict) and its kept edges
CREATE TABLE IF NOT EXISTS graphs (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,      -- content hash of model, prompt, transcoder set, target, settings
    model       TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    transcoder_set TEXT NOT NULL,          -- the set's name (unit ids L3/F12@name)
    transcoder_set_id TEXT NOT NULL,       -- its content id
    target      TEXT NOT NULL,             -- the first target token
    raw_logit   REAL NOT NULL,             -- the real model's logit of the target
    bias_terms  REAL NOT NULL,             -- the frozen replacement's logit at zero leaves
    completeness_error REAL NOT NULL,      -- |bias + sum of direct contributions - raw logit| / |raw logit|
    replacement_score REAL, completeness_score REAL,
    node_share  REAL NOT NULL, edge_share REAL NOT NULL,
    n_nodes     INTEGER NOT NULL, n_edges INTEGER NOT NULL,   -- kept by the pruning
    validation_json TEXT,                  -- graph --validate: per-latent predicted vs observed, correlation, MAE
    data_json   TEXT NOT NULL,             -- tokens, target logits, scores, timing, every direct contribution
    created_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS graph_nodes (
    graph_id    INTEGER NOT NULL REFERENCES graphs(id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,          -- circuit-tracer's node order: latents, errors, tokens, logits
    kind        TEXT NOT NULL,             -- latent | error | embedding | logit
    layer       INTEGER, pos INTEGER, latent INTEGER,
    unit        TEXT,                      -- L3/F12@set for a latent
    token       TEXT,
    activation  REAL, influence REAL,
    kept        INTEGER NOT NULL,
    PRIMARY KEY (graph_id, idx)
);

CREATE TABLE IF NOT EXISTS graph_edges (
    graph_id    INTEGER NOT NULL REFERENCES graphs(id) ON DELETE CASCADE,
    source      INTEGER NOT NULL,          -- node idx
    target      INTEGER NOT NULL,
    weight      REAL NOT NULL,             -- direct effect of source on target (target's input units)
    PRIMARY KEY (graph_id, source, target)
);
