/** Text imports of the web UI's static files (`import css from "./static/ui.css" with { type: "text" }`): Bun inlines the file as a string. */
declare module "*.css" {
  const text: string;
  export default text;
}
declare module "*/static/ui.js" {
  const text: string;
  export default text;
}
