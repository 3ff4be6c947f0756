// The landing page: translations only.
import { applyTranslations } from "./dom.js";

applyTranslations();
