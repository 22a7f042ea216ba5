// cli/cmd_train.cpp: `hamu train` — train the original (full) or retrained (retain-only) model.
#include <chrono>
#include <cstdio>

#include "cli/commands.h"
#include "cli/provenance.h"
#include "cli/resume.h"
#include "cli/common.h"
#include "cli/text_setup.h"
#include "engine/progress.h"
#include "models/checkpoint.h"
#include "unlearn/metrics.h"
#include "train/train.h"

namespace hamu::cli {

int cmd_train(int argc, char** argv) {
  if (is_text_command(argc, argv)) return cmd_train_text(argc, argv);
  std::vector<Flag> flags = {
      {"--data", "SPEC", "fashion-mnist, mnist:DIR, idx:DIR, cifar10:DIR, images:DIR", "fashion-mnist"},
      {"--model", "ARCH", "mlp, cnn or resnet20", "cnn"},
      {"--split", "SPEC", "class=C, class=C,rho=X, random=X or indices=FILE (recorded; needed for --subset retain)", ""},
      {"--subset", "WHICH", "full (retain + forget: the original model) or retain (the retrained reference)", "full"},
      {"--epochs", "N", "passes over the training subset", "3"},
      {"--batch", "N", "batch size", "128"},
      {"--lr", "X", "learning rate", "0.001"},
      {"--optimizer", "NAME", "adamw or sgd", "adamw"},
      {"--schedule", "S", "learning-rate schedule: cosine (decays to 0 over the run) or constant", "cosine"},
      {"--weight-decay", "X", "decoupled (adamw) or L2 (sgd) weight decay", "0"},
      {"--momentum", "X", "sgd momentum", "0.9"},
      {"--clip", "X", "clip the gradient to this total norm (0 = off)", "0"},
      {"--cuda-graph", "", "GPU (adamw, sgd, --clip): capture the training step once as a CUDA graph and replay it "
                           "for every full batch (one launch and one wait per step; says why when not used); the "
                           "evaluations' full batches are replayed too", ""},
      {"--eval-batch", "N", "batch size for evaluation", "1000"},
      {"--out", "CKPT", "where to write the safetensors checkpoint", ""},
      {"--json", "FILE", "also write the training log and final evaluation as JSON", ""},
  };
  for (Flag f : resume_flags("training steps")) flags.push_back(f);
  for (Flag f : common_flags()) flags.push_back(f);
  Args args("train", "--out CKPT [--data SPEC] [--model ARCH] [--split SPEC --subset full|retain] [flags]", flags);
  args.add_help_section("language models", {{"--model gpt-small|DIR", "or --data wordnet-qa|qa:FILE: text training, LoRA "
                                                                      "included (hamu train --model gpt-small --help)"}});
  if (!args.parse(argc, argv)) return 0;
  const std::string out_path = args.required("--out");
  check_output_path("--out", out_path);
  const std::string json_path = args.str_or("--json", "");
  if (!json_path.empty()) check_output_path("--json", json_path);
  const Device device = apply_common(args);
  const uint64_t seed = uint64_t(args.integer("--seed"));
  const auto [subset, split_spec] = read_train_subset(args);

  TrainOptions opt;
  read_loop_options(args, opt, seed, device);
  opt.optimizer = args.str("--optimizer");
  opt.momentum = args.number("--momentum");
  opt.graph = args.on("--cuda-graph");
  if (opt.graph && !device.is_cuda())
    throw InputError("--cuda-graph: CUDA graphs need --device cuda (this run is on " + device.str() + ")");
  TrainGraphReport graph_report;
  opt.graph_report = &graph_report;
  if (opt.momentum < 0) throw InputError("--momentum: must be >= 0");
  if (opt.optimizer != "adamw" && opt.optimizer != "sgd") throw InputError("--optimizer: '" + opt.optimizer + "' is not adamw or sgd");
  const int64_t eval_batch = args.integer("--eval-batch");
  if (eval_batch < 1) throw InputError("--eval-batch: must be at least 1");

  DataAndSplit ds = load_data_split(args.str("--data"), split_spec, seed);
  const ImageDataset& train = ds.data.train;
  models::ModelSpec spec{args.str("--model"), train.c, train.h, train.w, train.num_classes};
  // A resumed run must see the options and data it started with (checked before any work).
  const ResumableRun run(args, "train", out_path,
                         [&] { return Json::object({{"data", Json(dataset_hash(ds.data))}}); });
  Rng rng(seed);
  auto model = models::build_model(spec, rng);
  model->to(device);
  const Normalizer norm = compute_normalizer(train);

  std::vector<int64_t> subset_idx = ds.split.retain;
  if (subset == "full") {
    subset_idx.resize(size_t(train.n));
    for (int64_t i = 0; i < train.n; ++i) subset_idx[size_t(i)] = i;
  }
  std::fprintf(stderr, "hamu train: %s on %s (%lld images, %s), split %s, %lld parameters, %s\n",
               spec.describe().c_str(), ds.data.spec.c_str(), (long long)subset_idx.size(), subset.c_str(),
               ds.split.spec.c_str(), (long long)model->num_parameters(), device.str().c_str());

  EvalOptions eo;
  eo.batch = eval_batch;
  eo.device = device;
  eo.progress = "evaluate";
  EvalGraphs eval_graphs;  // --cuda-graph graphs the evaluations too (unlearn/graph_eval.h)
  eo.graph = opt.graph;
  eo.graphs = &eval_graphs;
  Json epochs_json = Json::array();
  double train_seconds = 0;
  auto on_epoch = [&](const EpochSummary& e) {
    train_seconds += e.seconds;
    SplitEval test = evaluate_indices(*model, ds.data.test, ds.test, norm, eo);
    SplitEval forget;
    if (ds.has_split) forget = evaluate_indices(*model, train, ds.split.forget, norm, eo);
    if (!Progress::disabled_by_env()) {  // --quiet: the epoch lines are progress lines
      std::fprintf(stderr, "epoch %lld/%lld: loss %.4f, train acc %.2f%%, test acc %.2f%%", (long long)e.epoch,
                   (long long)opt.epochs, e.train_loss, 100 * e.train_acc, 100 * test.acc);
      if (ds.has_split) std::fprintf(stderr, ", forget acc %.2f%%", 100 * forget.acc);
      std::fprintf(stderr, " (%.1f s, %.0f img/s%s)\n", e.seconds, e.images_per_s,
                   e.skipped_steps ? (", " + std::to_string(e.skipped_steps) + " non-finite steps skipped").c_str() : "");
    }
    Json ej = Json::object({{"epoch", Json(e.epoch)}, {"train_loss", Json(e.train_loss)}, {"train_acc", Json(e.train_acc)},
                            {"test_acc", Json(test.acc)}, {"seconds", Json(e.seconds)},
                            {"images_per_s", Json(e.images_per_s)}, {"skipped_steps", Json(e.skipped_steps)}});
    if (ds.has_split) ej.set("forget_acc", Json(forget.acc));
    epochs_json.push_back(ej);
  };
  run.resume_training_records(epochs_json, train_seconds);  // the finished epochs' records and time
  opt.resume = run.resumed();
  opt.checkpoint_every = run.every();
  opt.write_state = [&](RunState& st) { run.write_training_state(st, epochs_json, train_seconds); };
  train_model(*model, train, subset_idx, norm, opt, on_epoch);
  if (opt.graph)
    std::fprintf(stderr, "hamu train: --cuda-graph: %lld steps replayed from %lld capture(s)%s%s\n",
                 (long long)graph_report.replays, (long long)graph_report.captures,
                 graph_report.not_used.empty() ? "" : "; not used: ", graph_report.not_used.c_str());

  EvalReport report = evaluate_model(*model, ds.data, {&ds.split.forget, &ds.split.retain, &ds.test}, norm, eo);
  if (opt.graph) std::fprintf(stderr, "hamu train: --cuda-graph: evaluation %s\n", eval_graphs.summary().c_str());
  report.model = out_path;
  report.data = ds.data.spec;
  report.split = ds.split.spec;
  Json final_eval = eval_to_json(report);
  std::map<std::string, std::string> facts = {
      {"kind", subset == "full" ? "original" : "retrained"},
      {"data", ds.data.spec},
      {"split", ds.split.spec},
      {"subset", subset},
      {"seed", std::to_string(seed)},
      {"epochs", std::to_string(opt.epochs)},
      {"optimizer", opt.optimizer},
      {"schedule", opt.schedule},
      {"lr", fmt("%.6g", opt.lr)},
      {"batch", std::to_string(opt.batch)},
      {"train_seconds", fmt("%.3f", train_seconds)},
      {"normalizer", norm.to_string()},
      {"metrics", final_eval["splits"].dump()},
      {"hamu_version", kVersion},
  };
  Json prov = provenance_json(args, device);
  prov.set("data", data_identity_json(ds.data));
  facts["provenance"] = prov.dump();
  if (is_output_rank()) models::save_model(out_path, *model, spec, facts);  // under mpirun rank 0 alone writes
  std::printf("%s", eval_table(report).c_str());
  std::printf("saved %s (%s, %.1f s of training)\n", out_path.c_str(), facts["kind"].c_str(), train_seconds);
  if (!json_path.empty() && is_output_rank()) {
    Json j = Json::object({{"model", Json(spec.arch)}, {"checkpoint", Json(out_path)}, {"data", Json(ds.data.spec)},
                           {"split", Json(ds.split.spec)}, {"subset", Json(subset)}, {"seed", Json(int64_t(seed))},
                           {"train_seconds", Json(train_seconds)}});
    j.set("epochs", epochs_json);
    j.set("final", final_eval);
    j.set("provenance", prov);
    save_json(json_path, j);
  }
  if (is_output_rank()) run.finish();
  return 0;
}

}  // namespace hamu::cli
