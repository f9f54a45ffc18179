"""The twin: the demo world served over HTTP on 127.0.0.1 as CAVE and a graphene segmentation, so that
the real caveclient and cloud-volume talk to it unmodified (`python -m pipeline twin`, `serve_twin`).

Two server generations: `v1` (FlyWire-like: seung-lab/PyChunkedGraph branch pcgv1, unsharded Draco
fragments with legacy names, a manifest that ignores `bounds`) and `v2` (MICrONS-like:
CAVEconnectome/PyChunkedGraph, sharded Draco initial meshes, a manifest that honours `bounds` and
`start_layer`). Real limits are on by default at values scaled to bite at demo scale (limits.py).

Modules: model.py (the world as the servers' data model), cache.py + fragments.py + ids.py +
stitched.py (derived files, built once per world), info.py (CAVE info, graphene info), chunkedgraph.py, meshing.py,
l2cache.py, materialization.py, layers.py (buckets), server.py (HTTP, limits, latency, request log, outages),
log.py, species.py (a `source: cave` config for a running twin), serve.py (the CLI command), drift.py
(`--drift`: states a config does not expect, e.g. an expired version, terms of service not accepted),
faults.py (answers a test installs: one exact failure at the requests it chooses),
replay.py (`--replay`: a preflight recording served as it was answered), hostile.py (`--hostile SEED`: hidden
limits and the real servers' fault shapes, one named option each: HOSTILE_OPTIONS) with errors.py (the servers'
error bodies), ratelimit.py (the engine's rate limits), items.py (roots that fail every time), auth.py
(middle_auth's redirect), overload.py (few processes, a queue).

What the twin encodes about the real servers that nothing here could confirm (no machine here reaches
them; each fact was read from the file named, at the versions named: PyChunkedGraph 2.21.1 "v2",
pcgv1 1.24.2 "v1", MaterializationEngine 5.26.4, caveclient 8.2.1, cloud-volume 12.15.2):

Chunkedgraph
 1. Change logs: one GET with a JSON body of root ids; the answer maps each root to a DataFrame's
    to_json() with timestamps in ms (app/segmentation/v1/routes.py tabular_change_log_many;
    app/__init__.py CustomJsonEncoder). A row's after_root_ids lists only the after root in the queried
    root's lineage (graph/segmenthistory.py builds it from the lineage graph; caveclient's docstring
    says so). `filtered` (read with default True: app/segmentation/v1/routes.py
    tabular_change_log_many) drops the edits failing in_neuron or is_relevant, as
    graph/segmenthistory.py _build_tabular_changelogs computes them from the edit's sink and source
    supervoxels at the root's timestamp and at the earliest timestamp (corrected: the twin used to keep
    the whole lineage). Unverified: the twin's sink/source supervoxels are its edit's edge, and ops
    without points use supervoxels of the two sides.
 2. No explicit bound on roots per change-log request exists; the twin's 504 past 50 roots stands in
    for the timeout of one request building ~10^5 lineages. The real threshold is unmeasured: the hostile
    twin (hostile.py) draws it per seed (3-12 roots) and hides it, and CaveSource finds it (adaptive.py).
 3. Operation details: ids in the URL as urlencoded str(list) (caveclient chunkedgraph.py); keys are
    the log row's columns (graph/attributes.py OperationLogs): roots, user, source_coords and
    sink_coords (absent when the edit has none), added_edges or removed_edges, and on v2 operation_ts
    and operation_status, on v1 splits bb_offset; datetimes as str(datetime) (app/__init__.py). v2's
    `timestamp` is the edit's operation_ts (graph/client/bigtable/client.py read_log_entries); v1's
    is the log row's cell write time (pcgv1 backend/chunkedgraph.py read_log_rows): the twin puts it
    2.5 s after the edit, a magnitude it invents. Corrected reading (pcgv1 graphoperation.py writes the log
    row with the edit's own timestamp): on v1 the two times most likely agree. The twin keeps the lag as
    the harder case (the source resolves before-roots just before the details' own time either way).
 4. roots_binary: float seconds rounded DOWN to the millisecond (graph/client/bigtable/utils.py
    get_google_compatible_time_stamp), reads end-inclusive (an edit at T is seen at T); 0 for a
    supervoxel without a root at that time (fail_to_zero; what the real server answers before a
    supervoxel's first root is unverified).
 5. delta_roots: new = after roots of the edits in [past, future], old = their former roots
    (graph/misc.py get_proofread_root_ids); oldest_timestamp = the first edit's time - 500 ms
    (graph/chunkedgraph.py get_earliest_timestamp).
 6. past_id_mapping maps a past root to a future one only along merges (graph/segmenthistory.py
    past_future_id_mapping; the twin's rule is a reading of that code, not a port of it).
 7. The level-2 graph has one node per connected component of the neuron in a chunk, edges where
    components touch, cycles included (app/segmentation/common.py handle_get_layer2_graph; corrected:
    the twin used to serve each skeleton as its level-2 graph). The twin derives the components from
    the world's skeleton swept by a tube touching across chunk faces within 250 nm
    (pipeline/sources/demo_level2.py), not from supervoxels; rep_coord_nm is the voxel of the component's
    centreline sample nearest its centroid: the real l2cache's rule for that point is unread here.
 8. Level-2 ids belong to (root, chunk) in the twin and never change; on the real servers an edit makes
    new level-2 ids whose meshes are dynamic (unsharded) fragments (meshing/manifest/sharded_format.md).
    The twin has no dynamic fragments.

Meshes
 9. v2 manifest (app/meshing/common.py handle_get_manifest; meshing/manifest/sharded.py, utils.py):
    `bounds` in mip-0 voxels, turned into a chunk range from the volume's voxel offset, floor below and
    ceil above (graph/chunks/utils.py normalize_bounding_box, graph/utils/generic.py
    mask_nodes_by_bounding_box); `start_layer` from the JSON body or the query; with `verify`
    `~{layer}/{shard}:{offset}:{size}`, without it `~{id}:{layer}:{chunk id}:{shard}:{minishard}`;
    `return_seg_ids`, `prepend_seg_ids`. The twin holds level-2 fragments only (max_meshed_layer 2): the
    real datasets' stitched higher-layer initial meshes, their max_meshed_layer and sharding specs
    are unknown here (the twin's spec: murmurhash3, 1 minishard bit, 1 shard bit, per chunk).
10. Shard files named `{chunk position number}-{shard}.shard` (cloud-volume
    datasource/graphene/sharding.py) and laid out by cloud-volume's own synthesis; not compared with
    files PyChunkedGraph's mesher writes.
11. v1 manifest (pcgv1 app/meshing/common.py handle_get_manifest, meshing/meshgen_utils.py): `bounds`
    parsed and ignored, `start_layer` and `return_seg_ids` not read; with `verify` the highest nodes
    that have a mesh, from the root down (get_highest_child_nodes_with_meshes), without it the node
    itself; entries `{id}:0:{bbox}` where bbox is the node's chunk box (chunk size x 2^(layer-2)) from
    the chunk grid's origin WITHOUT the voxel offset (get_mesh_name, get_chunk_bbox). Edits remesh and
    stitch up to stop_layer 4 (app/meshing/tasks.py), so an edited root lists layer 3-4 fragments
    (corrected: the twin used to list level-2 fragments only; sim/twin/stitched.py). Also served
    on the legacy `meshing/1.0/{table}/manifest/...` route (app/meshing/legacy/routes.py) that a
    `segmentation/1.0/...` cloudpath (config/fly.yaml) makes cloud-volume ask. Unverified: FlyWire's
    initial meshes' layers (the twin: 2 only), the stitched meshes' simplification (mip 1, max_err 320
    nm; the twin's are not simplified), when a skip connection leaves a layer-3 node without a layer-4
    parent (the twin: when the root's part of the layer-4 chunk is in one layer-3 chunk), and whether
    FlyWire's chunks start at a non-zero voxel offset.
12. Draco: the bin is PyChunkedGraph's for a level-2 chunk (meshing/meshgen.py
    get_draco_encoding_settings_for_chunk, calculate_quantization_bits_and_range): 17 nm at 32 nm
    voxels, one grid for all fragments. The twin cuts each root's mesh by face centroid, so a
    fragment's faces reach up to ~230 nm past its chunk (cache summary max_overhang_nm); the real
    mesher meshes each chunk on its own (meshgen.py chunk_initial_mesh_task).
13. Unsharded fragments are served raw (no Content-Encoding); real buckets may gzip them.

Materialization
14. Row cap QUERY_LIMIT_SIZE = 200,000 (config.py; the twin: 50); limit = min(request's, cap); the
    header `Warning: 201 - "Limited query to N rows` whenever the result has exactly `limit` rows
    (blueprints/client/common.py). caveclient only logs it (base.py).
15. Answers: Arrow IPC stream, ZSTD-compressed when accepted, content type `data.arrow`,
    `dataframe_resolution` header, positions split into _x/_y/_z (blueprints/client/utils.py
    create_query_response); only valid rows. Ids are int64 (Postgres bigint; caveclient's live query
    promotes uint64 to float64 and loses digits); a missing root is served as 0, not null.
16. Versions: the listing drops expired versions unless `expired` is set (blueprints/client/api2.py);
    querying an expired version answers 404 here by default; with `--drift expired_version` it answers 500,
    as the engine most likely does (validate_datastack checks only the datastack, then opening the expired
    version's database fails: MaterializationEngine blueprints/client). Status and message unverified.
    The hostile twin's `wrapped_errors` (hostile.py) answers every error of the engine's client APIs as its
    error handler does: `500 {"code": 500, "message": "<code> <Name>: <description>", "traceback": [...]}`
    (blueprints/client/api.py line 49, api2.py line 93, common.py lines 28-51; werkzeug HTTPException.__str__),
    with the engine's texts: "404 Not Found: version V not found in DS" (datastack.py line 52), "404 Not Found:
    Analysis table 'T' not found for version V in datastack DS" (common.py validate_table_args), "410 Gone: This
    materialization version is not available" (common.py line 199); a v3 query of an expired version fails
    opening its database (a 500 naming `DS__matV`: the text is the twin's guess). Missing version or table
    metadata are returned, not raised: 404 with a JSON string (api2.py DatastackVersion, FrozenTableMetadata).
17. The twin's datastack has the demo's own tables (proofread_neurons; synapses with
    ctr_pt_position, cleft and connection scores and neurotransmitter scores), not FlyWire's or
    MICrONS' (theirs are named in config/fly.yaml and config/mouse.yaml).

Info, auth, buckets
18. Datastack info and table mapping shapes from caveclient (infoservice.py, l2cache.py has_cache);
    a Bearer token on the APIs (401 without), public buckets. The hostile twin's `auth_redirect` answers as
    middle_auth_client 3.19.0 does (decorators.py lines 275-279, 282-430; auth.py): a request without an
    Authorization header and without a valid token (query or cookie `middle_auth_token`) is redirected (302) to
    `<auth>/api/v1/authorize?redirect=<quoted URL>`, whose page is HTML (200); a wrong Bearer token is a 401
    `invalid_token`, a header without "Bearer " a 400 `bad_auth_header`. Unverified: the OAuth pages between the
    redirect and the login page, and the twin's login page's content (its own host, http, not the global auth
    server's https).
19. Buckets: gzip chunks sent with `Content-Encoding: gzip`, `Range` answered 206 (what GCS and S3
    do; cloud-files interfaces.py HttpInterface reads both).
20. 414 past 8 KB of URL: a front server's limit (nginx, gunicorn), in none of the services' code.
    Corrected: pcgv1's uwsgi.ini sets buffer-size = 4096, which holds the request line, the URI again,
    the query string and every header; past it uWSGI drops the request and nginx answers 502 (usable
    query string ~1.3 KB). The hostile twin applies that rule on v1 and a drawn 2-8 KB limit (414) on v2;
    real limits vary by deployment and are found by CaveSource, never configured.
21. The l2cache answers {} for an id it has no attributes for (caveclient l2cache.py).
22. Where a real server reads the clock (a request without a timestamp), the twin uses the world's
    as_of: it never reads the clock.
23. Rate limits: MaterializationEngine 5.26.4's limiter.py `limit_by_category` keys flask-limiter 3.12 on the
    token's user and scopes it by endpoint ("query" on FrozenTableQuery, api2.py line 1061, and LiveTableQuery,
    line 1816; "fast_query" on the listings and metadata); fixed windows (extension.py line 338, limits 5.4.0
    storage/memory.py incr: a window starts at a key's first hit), no headers (extension.py line 317: no
    Retry-After); the refusal's description is the RateLimitItem's repr, "200 per 1 minute" (flask-limiter
    errors.py line 31, limits/limits.py line 136), answered through the engine's 500 (item 16). The hostile twin's
    `rate_limit` (ratelimit.py) counts across all its clients, with a window of seconds and drawn amounts;
    production values are unverified (CAVEdeployment's 200 queries and 2000 fast queries a minute per
    shared/REAL_SOURCES.md: the stored copy read here has no limiter line). The old 429 bursts with Retry-After
    are gone (the engine never sends Retry-After); faults.py can still make one. Connection resets mid-body,
    random 502s and a slow tail past the client's first timeout (`limits`, `flaky`) are the twin's own plausible
    magnitudes, not measured ones.
24. Server errors: PyChunkedGraph (pcgv1 app/common.py lines 85-115, main's the same) and PCGL2Cache
    (pcgl2cache/app/common.py lines 86-111) answer any exception of a handler 500 with `{"timestamp", "duration",
    "code": 500, "message": str(e), "traceback"}`; the hostile twin's `server_errors_500` answers so where the kind
    twin answers a bad argument 400 (its timestamp is the world's as_of, its duration 0: it never reads the clock).
25. Item faults (hostile `item_faults`, items.py): pcgv1's `edges_failsafe` raises KeyError on undo/redo log rows
    (backend/history.py lines 163-164, 427-455), so every change-log batch holding such a root answers 500; a root
    whose change log never answers in time (PyChunkedGraph issue 526, per shared/REAL_SOURCES.md; not read
    here) is held 4.6 s then 504; one manifest and one level-2 graph answer 500. The demo world has no undo
    rows: the twin picks roots by seed instead of by their history.
26. Overload (hostile `overload`, overload.py): pcgv1's uwsgi.ini runs 64 processes (line 19) with a listen queue
    of 4096 (line 48) behind nginx: the twin serves at most P (2-4) API requests at once, the rest queue first come
    first served, each holding a process for a service time set from P. Real service times are unmeasured.
27. Outages (server.py go_down, `outage=(n, s)`): the twin closes its listening socket and every open connection
    for s seconds, then serves on the same port: the shape of a host restarting, not a measured outage.
"""

from sim.twin.faults import Fault
from sim.twin.limits import TwinLimits
from sim.twin.server import TOKEN, TwinServer, serve_twin

__all__ = ["TOKEN", "Fault", "TwinLimits", "TwinServer", "serve_twin"]
