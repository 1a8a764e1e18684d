// fastlstm: the umbrella header of the public C++ API.
#pragma once

#include "fastlstm/build_info.hpp"
#include "fastlstm/config.hpp"
#include "fastlstm/cpu.hpp"
#include "fastlstm/model.hpp"
#include "fastlstm/optim.hpp"
#include "fastlstm/rnn.hpp"
#include "fastlstm/threads.hpp"
