#pragma once
// Checkpoints of a training run, so that a run killed at any moment can go on
// from where it was, bit for bit.
//
// Layout: DIR/step-000123/{rank-0.pt, ..., rank-(P-1).pt, manifest.json}.
// Every rank writes its own file (its stages' parameters, its AdamW state,
// the step, which is also the data position since data is a function of
// (seed, step, micro-batch), and LibTorch's default generator state);
// after all have written, rank 0 writes the manifest: the run's identity and
// every file's size and FNV-1a 64 checksum. Every file goes through a
// temporary name, fsync and rename (and an fsync of the folder), so a
// checkpoint is complete exactly when its manifest exists and every file
// matches its checksum; a run killed while writing leaves an incomplete one,
// which --resume skips.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "dualpipe/runtime/comm.h"
#include "dualpipe/runtime/stage.h"
#include "dualpipe/schedule/schedule.h"
#include "dualpipe/train/models.h"

namespace dualpipe {

using Identity = nlohmann::ordered_json;

// What a checkpoint must share with the run that resumes it for its tensors
// to fit and its data to continue: method, ranks, stages, micro-batches, a
// hash of the schedule's actions, and the model configuration.
Identity run_identity(const Schedule& lowered, const ModelConfig& model);

struct CheckpointOptions {
  std::string dir;      // empty: no checkpoints
  int every = 0;        // every this many steps (0: only after the last step)
  int keep = 2;         // complete checkpoints kept; older ones are deleted
  int resume_step = 0;  // > 0: load DIR/step-N before training and continue with step N+1
  Identity identity;
  // Testing hook: called on rank 0 after every rank's file is written and
  // before the manifest (a kill there must leave an incomplete checkpoint).
  std::function<void(int step)> before_manifest;
};

// FNV-1a, 64 bits: a checksum against torn or corrupted files (not against tampering).
uint64_t fnv1a64(const void* data, std::size_t n, uint64_t h = 1469598103934665603ULL);

// DIR/step-000123.
std::string checkpoint_path(const std::string& dir, int step);

struct FoundCheckpoint {
  int step = 0;
  std::string path;
};

// The newest complete checkpoint in `dir`, or none. Incomplete (no manifest)
// and corrupt ones (unreadable manifest, missing file, a file that is not a
// regular file, size or checksum mismatch) are skipped, each with one line
// through `warn`; no file is read that is not a regular file of the size its
// manifest gives. Throws dualpipe::Error if the newest complete one was made
// by a different run (another method, shape or model), naming the
// difference, or if the folder holds what a checkpoint to come could not
// replace (a step-NNNNNN that is not a folder, a rank file or manifest that
// is a folder).
std::optional<FoundCheckpoint> find_checkpoint(const std::string& dir, const Identity& identity,
                                               const std::function<void(const std::string&)>& warn);

// An exclusive lock (flock) on DIR/.lock, held while it lives, by the process
// that launches a run: two runs writing into one folder would overwrite and
// delete each other's checkpoints. Creates DIR if needed; throws dualpipe::Error
// naming the folder if another process holds the lock.
// Ownership: owns the lock file descriptor; not copyable. Thread-safety: one
// per launching process.
class CheckpointLock {
 public:
  explicit CheckpointLock(const std::string& dir);
  ~CheckpointLock();
  CheckpointLock(const CheckpointLock&) = delete;
  CheckpointLock& operator=(const CheckpointLock&) = delete;

 private:
  int fd_ = -1;
};

// Throws dualpipe::Error if `dir` holds a complete checkpoint: a run that does not
// resume would otherwise mix its checkpoints with an earlier run's; and, as
// find_checkpoint, if it holds what a checkpoint to come could not replace.
void check_no_checkpoint(const std::string& dir);

// Rank side, called by every rank together (they meet in collectives).
// Writes this rank's file for the state after `step` steps; rank 0 then writes
// the manifest and deletes checkpoints beyond the `keep` newest.
void save_checkpoint(const CheckpointOptions& o, int step, const std::map<int, Stage>& stages,
                     torch::optim::Optimizer* optimizer, Comm& comm);

// Loads this rank's file of DIR/step-N (o.resume_step) into the stages and
// the optimizer, after checking it against the manifest; throws dualpipe::Error.
void load_checkpoint(const CheckpointOptions& o, const std::map<int, Stage>& stages,
                     torch::optim::Optimizer* optimizer, int rank);

}  // namespace dualpipe
