// ESLint (flat config) for the browser client: the recommended rules, browser globals, and no DOM in lib/
// (`make jscheck`; TypeScript checks the JSDoc types, see tsconfig.json).
import js from "@eslint/js";
import globals from "globals";

const noDom = "lib/ is the DOM-free library: put page code in ui/";

export default [
  { ignores: ["node_modules/", "static/vendor/"] },
  js.configs.recommended,
  {
    files: ["static/js/**/*.js"],
    languageOptions: { ecmaVersion: 2023, sourceType: "module", globals: { ...globals.browser } },
    rules: {
      "no-unused-vars": ["error", { args: "after-used", argsIgnorePattern: "^_", caughtErrors: "none" }],
    },
  },
  {
    files: ["static/js/lib/**/*.js"],
    rules: {
      "no-restricted-globals": ["error", { name: "document", message: noDom }, { name: "window", message: noDom }],
    },
  },
  {
    files: ["static/js/lib/e2ee-worker.js"],
    languageOptions: { globals: { ...globals.worker } },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "module", globals: { ...globals.node } },
  },
];
