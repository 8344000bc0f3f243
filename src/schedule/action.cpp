#include "dualpipe/schedule/action.h"

#include <fmt/format.h>

#include <cctype>
#include <charconv>

#include "dualpipe/schedule/error.h"

namespace dualpipe {

const char* op_name(Op op) {
  switch (op) {
    case Op::F: return "F";
    case Op::B: return "B";
    case Op::I: return "I";
    case Op::W: return "W";
    case Op::FB: return "OVERLAP_F_B";
    case Op::FF: return "OVERLAP_F_F";
    case Op::SEND_F: return "SEND_F";
    case Op::RECV_F: return "RECV_F";
    case Op::SEND_B: return "SEND_B";
    case Op::RECV_B: return "RECV_B";
    case Op::UNSHARD: return "UNSHARD";
    case Op::RESHARD: return "RESHARD";
    case Op::REDUCE_GRAD: return "REDUCE_GRAD";
  }
  return "?";
}

std::string to_string(const Action& a) {
  if (is_pair(a.op)) {
    const Action second = a.second_half();
    return fmt::format("({}F{};{}{}{}){}", a.stage, a.mb, second.stage, op_name(second.op), second.mb, op_name(a.op));
  }
  if (is_stage_only(a.op)) return fmt::format("{}{}", a.stage, op_name(a.op));
  return fmt::format("{}{}{}", a.stage, op_name(a.op), a.mb);
}

namespace {

// Reads a non-negative decimal number at the front of `s`, advancing it.
bool take_number(std::string_view& s, int& out) {
  if (s.empty() || !std::isdigit(static_cast<unsigned char>(s.front()))) return false;
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, out);
  if (ec != std::errc()) return false;
  s.remove_prefix(static_cast<size_t>(p - s.data()));
  return true;
}

bool take_prefix(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

// "<stage><op><mb>" with nothing left over; "<stage><op>" for the
// stage-only ops, which PyTorch writes without a micro-batch.
bool parse_simple(std::string_view s, Action& a) {
  if (!take_number(s, a.stage)) return false;
  // Longest names first so that "SEND_F" is not read as something shorter.
  static const Op ops[] = {Op::REDUCE_GRAD, Op::UNSHARD, Op::RESHARD, Op::SEND_F, Op::RECV_F,
                           Op::SEND_B,      Op::RECV_B,  Op::F,       Op::B,      Op::I, Op::W};
  bool found = false;
  for (Op op : ops) {
    if (take_prefix(s, op_name(op))) {
      a.op = op;
      found = true;
      break;
    }
  }
  if (!found) return false;
  a.stage2 = a.mb2 = -1;
  if (is_stage_only(a.op)) {
    a.mb = -1;
    return s.empty();
  }
  if (!take_number(s, a.mb)) return false;
  return s.empty();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// PyTorch's lowered schedules (format "compute_comms") also hold waits:
// WAIT_SEND_F/WAIT_SEND_B retire a send, WAIT_REDUCE_GRAD a gradient
// reduction. dualpipe's runtime waits on its sends and reductions itself and
// has no such actions; say so rather than calling the cell malformed.
void refuse_unexecuted(std::string_view s, std::string_view text) {
  int stage = 0;
  if (!take_number(s, stage)) return;
  for (std::string_view name : {"WAIT_SEND_F", "WAIT_SEND_B", "WAIT_REDUCE_GRAD"}) {
    if (s.substr(0, name.size()) == name)
      throw Error(fmt::format("'{}' is PyTorch's {}, an action dualpipe does not execute (its runtime waits on sends "
                              "and reductions itself); export the schedule's compute actions only (PyTorch: "
                              "_dump_csv(file, format=\"compute_only\"))",
                              printable(text), name));
  }
}

}  // namespace

std::string printable(std::string_view text, std::size_t max_chars) {
  // Bad cells come from arbitrary files (binary garbage included): escape
  // what a terminal would interpret and cut long ones, so the error stays one
  // short line.
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) {
      out += fmt::format("... ({} bytes)", text.size());
      break;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f)
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  return out;
}

Action parse_action(std::string_view text) {
  std::string_view s = trim(text);
  Action a;
  if (!s.empty() && s.front() == '(') {
    // (<stage>F<mb>;<stage>B<mb>)OVERLAP_F_B or (<stage>F<mb>;<stage>F<mb>)OVERLAP_F_F
    auto semi = s.find(';');
    auto close = s.find(')');
    Action f, b;
    if (semi != std::string_view::npos && close != std::string_view::npos && semi < close &&
        parse_simple(trim(s.substr(1, semi - 1)), f) && parse_simple(trim(s.substr(semi + 1, close - semi - 1)), b) &&
        f.op == Op::F) {
      const std::string_view kind = s.substr(close + 1);
      if (kind == "OVERLAP_F_B" && b.op == Op::B) return Action::pair(f.stage, f.mb, b.stage, b.mb);
      if (kind == "OVERLAP_F_F" && b.op == Op::F) return Action::forward_pair(f.stage, f.mb, b.stage, b.mb);
    }
    throw Error(fmt::format("malformed overlapped pair '{}': expected (<stage>F<mb>;<stage>B<mb>)OVERLAP_F_B or "
                            "(<stage>F<mb>;<stage>F<mb>)OVERLAP_F_F",
                            printable(text)));
  }
  if (parse_simple(s, a)) return a;
  refuse_unexecuted(s, text);
  throw Error(fmt::format(
      "malformed action '{}': expected <stage><op><micro-batch> with op one of F, B, I, W, SEND_F, RECV_F, SEND_B, "
      "RECV_B, or <stage><op> with op one of UNSHARD, RESHARD, REDUCE_GRAD",
      printable(text)));
}

}  // namespace dualpipe
