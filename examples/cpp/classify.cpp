// Few-shot classification from C++ with the RAII wrapper bindings/cpp/mgecl.hpp.
//
//   classify_cpp MODEL LABEL=IMAGE [LABEL=IMAGE ...] -- QUERY [QUERY ...]
//
// Build against an installed library: examples/cpp/CMakeLists.txt. From the build tree:
//   c++ -std=c++17 -Iinclude -Ibindings/cpp examples/cpp/classify.cpp
//       -Ltarget/release -lmgecl -Wl,-rpath,$PWD/target/release -o classify_cpp
#include <cstdio>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "mgecl.hpp"

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::size_t split = 0;
    for (std::size_t i = 1; i < args.size(); i++)
        if (args[i] == "--") split = i;
    if (args.size() < 4 || split < 2 || split + 1 == args.size()) {
        std::cerr << "usage: " << argv[0] << " MODEL LABEL=IMAGE... -- QUERY...\n";
        return 2;
    }
    try {
        mgecl::Model model = mgecl::Model::load(args[0]);
        mgecl::ModelInfo info = model.info();
        std::cout << "mgecl " << mgecl::version() << ", model " << info.arch << ", "
                  << info.feature_dim << "-d features\n";

        mgecl::Task task(model);
        std::set<std::string> labels;
        for (std::size_t i = 1; i < split; i++) {
            std::size_t eq = args[i].find('=');
            if (eq == std::string::npos) {
                std::cerr << "expected LABEL=IMAGE, got " << args[i] << "\n";
                return 2;
            }
            std::string label = args[i].substr(0, eq);
            if (labels.insert(label).second) task.add_class(label);
            task.add_example(label, mgecl::Image::file(args[i].substr(eq + 1)));
        }

        // Errors are exceptions that carry the status code.
        try {
            task.classify(mgecl::Image::file(args[split + 1]));
        } catch (const mgecl::Error &e) {
            std::cout << "before fit: " << mgecl_status_name(e.status()) << "\n";
        }

        mgecl::FitReport report = task.fit();
        std::cout << "fitted " << report.classes << " classes on " << report.rows
                  << " examples\n";
        for (std::size_t i = split + 1; i < args.size(); i++) {
            mgecl::Prediction best = task.classify(mgecl::Image::file(args[i]));
            std::cout << args[i] << ": " << best.label.value_or("unknown");
            for (const auto &entry : task.top_k(mgecl::Image::file(args[i]), 2)) {
                char p[32];
                std::snprintf(p, sizeof p, "%.3f", entry.second);
                std::cout << " [" << entry.first << " " << p << "]";
            }
            std::cout << "\n";
        }

        // Which query would help most if labelled (uncertain, like many others).
        std::vector<mgecl::Image> queries;
        for (std::size_t i = split + 1; i < args.size(); i++)
            queries.push_back(mgecl::Image::file(args[i]));
        std::vector<float> features = task.embed_queries(queries);
        auto next = task.label_next(features, queries.size(), 1);
        if (!next.empty()) std::cout << "label next: " << args[split + 1 + next[0].first] << "\n";
    } catch (const mgecl::Error &e) {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
