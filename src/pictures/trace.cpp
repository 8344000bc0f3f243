// Chrome trace-event JSON, written by hand: a schedule can have millions of
// actions, and building an nlohmann::json tree for them costs many times the
// memory of the text. Every string that is not ours (the method name) goes
// through json_escape.
//
// Format: {"traceEvents":[...],"displayTimeUnit":"ms"}; process 0 is the
// schedule, thread r is rank r; one "X" (complete) event per compute action,
// one "i" (instant) event per stage-only action (UNSHARD, RESHARD, REDUCE_GRAD),
// "M" (metadata) events name the process and the threads and keep the
// threads in rank order.
#include "dualpipe/pictures/trace.h"

#include <fmt/format.h>

#include <iterator>
#include <string_view>

#include "dualpipe/schedule/error.h"

namespace dualpipe {
namespace {

void json_escape(std::string& out, std::string_view text) {
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (u < 0x20) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<unsigned>(u));
    } else {
      out += ch;
    }
  }
}

}  // namespace

std::string chrome_trace(const Schedule& s, const SimResult& sim, double us_per_unit) {
  if (sim.timeline.size() != s.actions.size())
    throw Error("chrome_trace: the simulation has no timeline for this schedule");
  std::string out;
  out.reserve(200 + s.action_count() * 130);
  auto o = std::back_inserter(out);

  out += "{\"traceEvents\":[\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,\"args\":{\"name\":\"dualpipe ";
  json_escape(out, s.method);
  out += "\"}}";
  for (std::size_t r = 0; r < s.actions.size(); ++r) {
    fmt::format_to(o, ",\n{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,\"tid\":{0},\"args\":{{\"name\":\"rank {0}\"}}}}",
                   r);
    fmt::format_to(o, ",\n{{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":0,\"tid\":{0},\"args\":{{\"sort_index\":{0}}}}}",
                   r);
  }
  for (std::size_t r = 0; r < s.actions.size(); ++r) {
    for (std::size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      if (is_comm(a.op)) continue;
      const Span& sp = sim.timeline[r][i];
      if (is_stage_only(a.op)) {
        // UNSHARD, RESHARD, REDUCE_GRAD take no simulated time: an instant
        // event on the rank's track marks where it issues them.
        fmt::format_to(o, ",\n{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"i\",\"s\":\"t\",\"ts\":{},\"pid\":0,\"tid\":{},"
                       "\"args\":{{\"stage\":{}}}}}",
                       to_string(a), op_name(a.op), us_per_unit * sp.start, r, a.stage);
        continue;
      }
      // Action strings are digits, op names and "(;)": nothing to escape.
      // {} prints a double in its shortest round-trip form, valid JSON.
      fmt::format_to(o, ",\n{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"X\",\"ts\":{},\"dur\":{},\"pid\":0,\"tid\":{},", to_string(a),
                     op_name(a.op), us_per_unit * sp.start, us_per_unit * (sp.end - sp.start), r);
      if (a.op == Op::FB) {
        const Action f = a.forward_half(), b = a.backward_half();
        fmt::format_to(o, "\"args\":{{\"f_stage\":{},\"f_mb\":{},\"b_stage\":{},\"b_mb\":{}}}}}", f.stage, f.mb,
                       b.stage, b.mb);
      } else if (a.op == Op::FF) {
        fmt::format_to(o, "\"args\":{{\"f_stage\":{},\"f_mb\":{},\"f2_stage\":{},\"f2_mb\":{}}}}}", a.stage, a.mb,
                       a.stage2, a.mb2);
      } else
        fmt::format_to(o, "\"args\":{{\"stage\":{},\"mb\":{}}}}}", a.stage, a.mb);
    }
  }
  out += "\n],\"displayTimeUnit\":\"ms\"}\n";
  return out;
}

}  // namespace dualpipe
